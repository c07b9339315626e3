"""How far an import has got, told to whoever watches it: a job's heartbeat, or the command's terminal.

An import reads the source's files, then validates its leaves one by one and writes the changed ones a batch at
a time. It tells its `Progress` at each step and asks `check()` between steps, which a watcher uses to stop it
(a cancelled job): what `check()` raises rolls the import's one transaction back.
"""


class Progress:
    """Counts an import reports as it goes. This base keeps them; subclasses show or publish them."""

    def __init__(self) -> None:
        self.stage = ""
        self.files_read = 0
        self.leaves_total = 0
        self.leaves_validated = 0
        self.leaves_written = 0

    def begin(self, stage: str) -> None:
        self.stage = stage
        self.changed()

    def file_read(self, count: int) -> None:
        self.files_read = count
        if count % 100 == 0:
            self.changed()

    def leaves_found(self, count: int) -> None:
        self.leaves_total = count
        self.changed()

    def leaf_validated(self) -> None:
        self.leaves_validated += 1
        if self.leaves_validated % 50 == 0:
            self.changed()

    def written(self, count: int) -> None:
        self.leaves_written += count
        self.changed()

    def changed(self) -> None:
        """Called every so often with new counts (not at every file): show them, or stop the import."""
        self.check()

    def check(self) -> None:
        """Raise to stop the import (its transaction rolls back); by default it goes on."""
