"""`prefect-beamline watch DIR`: announce movies of microscopes that only write files.

Polls a folder for new movies; once a movie's size and mtime have not changed for
`settle_s` seconds (the microscope has finished writing it), POSTs one `images_ready`
event for it to the gateway, as a DAQ would. What was posted is remembered in a small
JSON state file (written atomically), so a restarted watcher never announces a movie
twice; the event id is derived from the collection and the path as well, so even a lost
state file only produces duplicates the gateway drops.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from prefect_beamline.events import CollectionEvent, CollectionEventKind

MOVIE_PATTERNS = ("*.mrc", "*.mrcs", "*.tif", "*.tiff", "*.eer")
STATE_FILE = ".prefect-beamline-watch.json"


@dataclass
class WatchConfig:
    """Which folder, which collection, and how to reach the gateway."""

    directory: Path
    collection_id: int
    beamline: str
    visit: str
    gateway_url: str = "http://127.0.0.1:8787"
    token: str | None = None
    technique: str = "em"
    experiment_type: str = "default"
    patterns: tuple[str, ...] = MOVIE_PATTERNS
    settle_s: float = 5.0
    poll_s: float = 2.0
    recursive: bool = False
    processing_parameters: dict[str, Any] = field(default_factory=dict)
    state_file: Path | None = None

    @property
    def state_path(self) -> Path:
        return self.state_file or self.directory / STATE_FILE


def event_id_for(collection_id: int, path: Path) -> str:
    """Deterministic id of the announcement of one movie."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:20]
    return f"watch-{collection_id}-{digest}"


def post_to_gateway(config: WatchConfig) -> Callable[[CollectionEvent], None]:
    """A poster that POSTs to the gateway and raises on anything but 202."""

    def post(event: CollectionEvent) -> None:
        headers = {"Content-Type": "application/json"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        response = httpx.post(
            f"{config.gateway_url}/api/v1/collections",
            content=event.model_dump_json(),
            headers=headers,
            timeout=10.0,
        )
        if response.status_code != 202:
            raise RuntimeError(f"gateway answered {response.status_code}: {response.text}")

    return post


class FolderWatcher:
    """Poll a folder; announce each movie once its size has settled."""

    def __init__(
        self,
        config: WatchConfig,
        post: Callable[[CollectionEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.post = post or post_to_gateway(config)
        self.clock = clock
        self.posted: dict[str, str] = self._load_state()
        # path -> (size, mtime_ns, time first seen with that size and mtime)
        self._seen: dict[str, tuple[int, int, float]] = {}

    def _load_state(self) -> dict[str, str]:
        path = self.config.state_path
        if not path.exists():
            return {}
        try:
            return dict(json.loads(path.read_text()).get("posted", {}))
        except (json.JSONDecodeError, AttributeError) as error:
            raise ValueError(f"{path}: watch state file is not valid JSON: {error}") from error

    def _save_state(self) -> None:
        path = self.config.state_path
        partial = path.with_name(path.name + ".part")
        partial.write_text(json.dumps({"posted": self.posted}, indent=1))
        partial.replace(path)

    def _candidates(self) -> list[Path]:
        walk = (
            self.config.directory.rglob("*")
            if self.config.recursive
            else (self.config.directory.iterdir())
        )
        return sorted(
            path
            for path in walk
            if path.is_file()
            and "processing" not in path.relative_to(self.config.directory).parts
            and any(fnmatch.fnmatch(path.name, p) for p in self.config.patterns)
            and path.name != "gain_reference.mrc"
        )

    def poll_once(self) -> list[Path]:
        """Announce every movie that has settled since the last poll; return them."""
        now = self.clock()
        announced = []
        for path in self._candidates():
            key = str(path.resolve())
            if key in self.posted:
                continue
            stat = path.stat()
            signature = (stat.st_size, stat.st_mtime_ns)
            seen = self._seen.get(key)
            if seen is None or seen[:2] != signature:
                self._seen[key] = (*signature, now)
                continue
            if stat.st_size == 0 or now - seen[2] < self.config.settle_s:
                continue
            event = CollectionEvent(
                event_id=event_id_for(self.config.collection_id, path),
                kind=CollectionEventKind.images_ready,
                technique=self.config.technique,
                experiment_type=self.config.experiment_type,
                beamline=self.config.beamline,
                visit=self.config.visit,
                collection_id=self.config.collection_id,
                data_files=[key],
                processing_parameters=self.config.processing_parameters,
                source="daq",
            )
            self.post(event)
            self.posted[key] = event.event_id
            self._save_state()
            announced.append(path)
        return announced

    def run(self, duration_s: float | None = None) -> int:
        """Poll until interrupted (or for `duration_s`); return how many were announced."""
        end = None if duration_s is None else self.clock() + duration_s
        count = 0
        try:
            while end is None or self.clock() < end:
                for path in self.poll_once():
                    count += 1
                    print(f"announced {path}", flush=True)
                time.sleep(self.config.poll_s)
        except KeyboardInterrupt:
            pass
        return count
