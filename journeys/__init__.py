"""Journeys: the routes that start or steer a patient pathway across departments.

Domain packages never import the workflow engine, and the engine never imports a domain
package (DESIGN.md section 1). Check-in must do both: create the encounter (OPD) and start
the OPD pathway (engine). Such composition lives here, as thin routes over both, like the
app factory composes the blueprints.
"""
