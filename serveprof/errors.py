"""User-facing errors: every one names the problem and the fix."""


class ServeprofError(Exception):
    """An error a user can act on.

    ``problem`` says what is wrong, ``fix`` says what to do about it. The CLI prints
    both and exits non-zero without a traceback.
    """

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  fix: {fix}" if fix else problem)
