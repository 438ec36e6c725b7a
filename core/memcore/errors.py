"""Errors that are the user's to fix: the command line prints them without a traceback."""


class MemcoreError(Exception):
    """Base class; ``exit_code`` is the process exit status the CLI uses."""

    exit_code = 1


class RecipeError(MemcoreError):
    """A recipe is invalid. ``problems`` holds one line per problem, each naming its TOML key."""

    exit_code = 2

    def __init__(self, problems, source="recipe"):
        self.problems = list(problems)
        self.source = source
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n  " + "\n  ".join(self.problems))


class TrainingStopped(MemcoreError):
    """Training stopped on purpose (non-finite loss, interrupt); the last good checkpoint is kept."""

    exit_code = 3
