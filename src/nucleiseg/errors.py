"""User-facing errors: the CLI prints them as one line and exits with status 1."""


class NucleisegError(Exception):
    """An error caused by the user's input (file, option, model), reported without a traceback."""


class InputError(NucleisegError):
    """A file that cannot be read or does not fit (names the file and the problem)."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
