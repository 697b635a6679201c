"""Secrets (the OpenAI key, the Label Studio token): from the environment, else from a Prefect Secret
block. Never from files in the repository, and never logged or written by the code that uses them."""

from __future__ import annotations

import os


def secret(env_var: str, block: str) -> str | None:
    """The value of `env_var`, else of the Prefect Secret block `block`, else None."""
    return os.environ.get(env_var) or _from_prefect(block)


def _from_prefect(name: str) -> str | None:
    """A Prefect Secret block's value, inside a flow run or with a Prefect API configured."""
    from prefect.context import FlowRunContext, TaskRunContext

    in_run = FlowRunContext.get() is not None or TaskRunContext.get() is not None
    if not (in_run or os.environ.get("PREFECT_API_URL")):
        return None  # outside Prefect, loading a block would start a throwaway server just to find nothing
    try:
        from prefect.blocks.system import Secret

        return str(Secret.load(name).get())
    except (ValueError, ImportError):
        return None
