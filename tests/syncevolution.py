"""Running the real SyncEvolution SyncML client against the service, with files as its store.

``../shared/tools/syncevolution/syncml-client`` (beside the repository) configures
SyncEvolution with one directory per source (one file per item) and runs one sync. Each
client has its own home (configuration and sync anchors), so two homes are two devices.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

REPOSITORY = Path(__file__).resolve().parents[1]
CLIENT = Path(
    os.environ.get(
        "SYNCML_CLIENT", REPOSITORY.parent / "shared" / "tools" / "syncevolution" / "syncml-client"
    )
)
SOURCES = ("addressbook", "calendar", "todo", "memo")


def require_client() -> None:
    if not CLIENT.exists() or shutil.which("syncevolution") is None:
        pytest.skip(f"SyncEvolution is not installed (run {CLIENT.parent}/install as root)")


@dataclass
class SyncRun:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class SyncClient:
    """One SyncEvolution client (one device): its store directory and its own home."""

    url: str
    root: Path
    device_id: str
    user: str
    password: str
    wbxml: bool = False

    def folder(self, source: str) -> Path:
        path = self.root / source
        path.mkdir(parents=True, exist_ok=True)
        return path

    def items(self, source: str) -> dict[str, str]:
        folder = self.folder(source)
        return {
            path.name: path.read_text()
            for path in sorted(folder.iterdir())
            if path.is_file() and not path.name.startswith(".")
        }

    def put(self, source: str, name: str, text: str) -> None:
        (self.folder(source) / name).write_text(text)

    async def sync(
        self,
        *sources: str,
        mode: str = "two-way",
        max_msg_size: int | None = None,
        password: str | None = None,
        deadline: float = 60,
        verbose: bool = False,
    ) -> SyncRun:
        command = [
            str(CLIENT),
            "--url",
            self.url,
            "--user",
            self.user,
            "--password",
            password if password is not None else self.password,
            "--device-id",
            self.device_id,
            "--dir",
            str(self.root),
            "--home",
            str(self.root / ".home"),
            "--mode",
            mode,
            "--wbxml" if self.wbxml else "--xml",
        ]
        if max_msg_size is not None:
            command += ["--max-msg-size", str(max_msg_size)]
        if verbose:
            command.append("--verbose")
        command += list(sources or SOURCES)
        with trio.fail_after(deadline):
            done = await trio.run_process(
                command, capture_stdout=True, capture_stderr=True, check=False
            )
        output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        return SyncRun(done.returncode, output)
