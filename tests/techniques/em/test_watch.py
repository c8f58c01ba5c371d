"""`prefect-beamline watch`: one images_ready event per movie, once its size has settled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefect_beamline.cli import build_parser
from prefect_beamline.events import CollectionEvent, CollectionEventKind
from prefect_beamline.techniques.em.watch import FolderWatcher, WatchConfig, event_id_for


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def watcher(folder: Path, posted: list[CollectionEvent], clock: Clock) -> FolderWatcher:
    config = WatchConfig(
        directory=folder,
        collection_id=4100,
        beamline="m02",
        visit="bi23047-1",
        settle_s=5.0,
        processing_parameters={"dose_per_frame": 1.2},
    )
    return FolderWatcher(config, post=posted.append, clock=clock)


def test_a_movie_is_announced_once_after_its_size_settles(tmp_path: Path) -> None:
    posted: list[CollectionEvent] = []
    clock = Clock()
    watch = watcher(tmp_path, posted, clock)
    movie = tmp_path / "FoilHole_1_Data_0001.mrc"
    movie.write_bytes(b"x" * 100)
    (tmp_path / "notes.txt").write_text("not a movie")
    assert watch.poll_once() == []  # first sight
    clock.now = 3.0
    movie.write_bytes(b"x" * 200)  # still being written
    assert watch.poll_once() == []
    clock.now = 6.0
    assert watch.poll_once() == []  # only 3 s since the size last changed
    clock.now = 9.0
    assert watch.poll_once() == [movie]
    clock.now = 20.0
    assert watch.poll_once() == []  # never twice
    (event,) = posted
    assert event.kind == CollectionEventKind.images_ready
    assert event.technique == "em"
    assert event.collection_id == 4100
    assert event.data_files == [str(movie.resolve())]
    assert event.processing_parameters == {"dose_per_frame": 1.2}
    assert event.event_id == event_id_for(4100, movie)


def test_a_restarted_watcher_remembers_what_it_posted(tmp_path: Path) -> None:
    posted: list[CollectionEvent] = []
    clock = Clock()
    first = watcher(tmp_path, posted, clock)
    (tmp_path / "a.tiff").write_bytes(b"1" * 10)
    first.poll_once()
    clock.now = 10.0
    assert len(first.poll_once()) == 1
    state = json.loads((tmp_path / ".prefect-beamline-watch.json").read_text())
    assert list(state["posted"]) == [str((tmp_path / "a.tiff").resolve())]
    (tmp_path / "b.tiff").write_bytes(b"2" * 10)
    again = watcher(tmp_path, posted, clock)
    again.poll_once()
    clock.now = 20.0
    assert [p.name for p in again.poll_once()] == ["b.tiff"]
    assert [Path(e.data_files[0]).name for e in posted] == ["a.tiff", "b.tiff"]


def test_a_failed_post_is_retried_at_the_next_poll(tmp_path: Path) -> None:
    clock = Clock()
    attempts: list[CollectionEvent] = []

    def flaky(event: CollectionEvent) -> None:
        attempts.append(event)
        if len(attempts) == 1:
            raise RuntimeError("gateway answered 503")

    watch = FolderWatcher(
        WatchConfig(directory=tmp_path, collection_id=4101, beamline="m02", visit="bi1-1"),
        post=flaky,
        clock=clock,
    )
    (tmp_path / "m.mrc").write_bytes(b"m" * 10)
    watch.poll_once()
    clock.now = 10.0
    with pytest.raises(RuntimeError, match="503"):
        watch.poll_once()
    assert watch.poll_once() == [tmp_path / "m.mrc"]
    assert len(attempts) == 2


def test_cli_parses_the_watch_command(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "watch",
            str(tmp_path),
            "--collection-id",
            "4102",
            "--beamline",
            "m02",
            "--visit",
            "bi23047-1",
            "--set",
            "dose_per_frame=1.1",
            "--duration",
            "0",
        ]
    )
    assert args.collection_id == 4102 and args.set == ["dose_per_frame=1.1"]
    assert args.handler(args) == 0
