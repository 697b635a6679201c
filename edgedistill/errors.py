"""The one error type users see: what is wrong, and what to do about it."""


class EdgedistillError(Exception):
    """A problem the user can fix. `hint` says how."""

    def __init__(self, problem: str, hint: str = "") -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}\n  -> {hint}" if hint else problem)


def describe_validation_error(error, skip: int = 0) -> str:
    """One line per pydantic error, naming the field: `speech.engines.0: Input should be ...`.

    `skip` drops leading location parts that are not fields (a union's tag).
    """
    return "\n".join(
        f"  {'.'.join(str(p) for p in e['loc'][skip:]) or '(top level)'}: {e['msg']}" for e in error.errors()
    )
