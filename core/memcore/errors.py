"""Errors that are the user's to fix: the command line prints them without a traceback."""


class MemcoreError(Exception):
    """Base class; ``exit_code`` is the process exit status the CLI uses (the table is in the
    README): 2 for every mistake in the input or the environment, whenever it is found.
    ``every_rank``: raised with the same message on every process, so only rank 0 prints it."""

    exit_code = 2
    every_rank = False


class RecipeError(MemcoreError):
    """A recipe is invalid. ``problems`` holds one line per problem, each naming its TOML key."""

    exit_code = 2

    def __init__(self, problems, source="recipe"):
        self.problems = list(problems)
        self.source = source
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n  " + "\n  ".join(self.problems))


class TrainingStopped(MemcoreError):
    """Training stopped on purpose (a non-finite loss); the last good checkpoint is kept."""

    exit_code = 3


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the process exits with 128 + the signal number, like a shell reports it.

    A KeyboardInterrupt (not an Exception) so that no ``except Exception`` on the way out
    mistakes it for a failure of whatever was running.
    """

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
