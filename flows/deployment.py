"""The recipe flow as a module-level object: the entrypoint prefect.yaml names for Prefect's workers.

A module of its own because building the flow imports Prefect, and flows/run.py is imported by
every command, most of which never need Prefect.
"""

from flows.run import recipe_flow

recipe_run = recipe_flow()
