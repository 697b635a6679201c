"""The front doors: the CLI, the Prefect flow, and the two pipelines that wire the stages into dataset versions."""
