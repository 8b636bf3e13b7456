"""Pathways as BPMN processes: parsing, running, storing and routing SpiffWorkflow instances.

Only this package imports SpiffWorkflow.
"""
