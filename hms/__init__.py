"""HMS: a hospital management system whose patient pathways are BPMN processes."""

__version__ = "0.1.0"
