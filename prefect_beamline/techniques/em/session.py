"""A cryo-EM session as it grows: its shared folder, STAR tables and running statistics.

Every movie's run adds its rows to the session's STAR tables and refreshes the
statistics; the session-summary run refreshes them once more when the session ends.
The statistics come from the LIMS, so a movie reprocessed counts once, with its latest
successful result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from prefect_beamline.lims import CollectionDescription
from prefect_beamline.techniques.em.records import RecordedMovieResult

# The per-movie flow and its deployment (prefect.yaml), whose runs a session is made of.
MOVIE_FLOW = "em-processing"
MOVIE_DEPLOYMENT = f"{MOVIE_FLOW}/em-movie"
SUMMARY_DEPLOYMENT = "em-session-summary/em-session-summary"
STATISTICS_FILE = "session_statistics.json"
HISTOGRAMS_FILE = "session_histograms.png"
MOTION_STAR = "corrected_micrographs.star"
CTF_STAR = "micrographs_ctf.star"


def session_folder(collection: CollectionDescription) -> Path:
    """`<movie folder>/processing/em/dc<id>`: the session's shared STAR tables and summary."""
    movie_folder = Path(collection.data_files[0]).parent
    return movie_folder / "processing" / "em" / f"dc{collection.collection_id}"


def latest_results(recorded: list[RecordedMovieResult]) -> list[RecordedMovieResult]:
    """Per movie, the result of its most recent successful program."""
    latest: dict[int, RecordedMovieResult] = {}
    for result in recorded:
        if result.program_status:
            latest[result.movie.movie_id] = result  # results come oldest program first
    return sorted(latest.values(), key=lambda r: r.movie.movie_number)


def _describe(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values)
    return {"min": float(array.min()), "median": float(np.median(array)), "max": float(array.max())}


def session_statistics(recorded: list[RecordedMovieResult]) -> dict[str, Any]:
    """Defocus, drift and fit resolution of a session from its latest per-movie results."""
    movies: list[dict[str, Any]] = []
    for done in latest_results(recorded):
        ctf = done.result.ctf
        movies.append(
            {
                "movie": Path(done.movie.path).name,
                "defocus_u": ctf.defocus_u if ctf else None,
                "defocus_v": ctf.defocus_v if ctf else None,
                "astigmatism_angle": ctf.angle_deg if ctf else None,
                "fit_resolution": ctf.fit_resolution if ctf else None,
                "total_motion": done.result.motion.total_motion,
            }
        )
    return {
        "n_movies": len(movies),
        "defocus_angstrom": _describe([mean_defocus(m) for m in movies]),
        "total_motion_angstrom": _describe([m["total_motion"] for m in movies]),
        "fit_resolution_angstrom": _describe([m["fit_resolution"] or 0.0 for m in movies]),
        "movies": movies,
    }


def mean_defocus(movie: dict[str, Any]) -> float:
    """The mean defocus (Å) of one movie of `session_statistics`; 0 without a fit."""
    return 0.5 * ((movie["defocus_u"] or 0.0) + (movie["defocus_v"] or 0.0))


def write_session_statistics(folder: Path, statistics: dict[str, Any]) -> Path:
    """session_statistics.json and the histograms PNG; returns the PNG."""
    from prefect_beamline.techniques.em.report import session_histograms_png

    folder.mkdir(parents=True, exist_ok=True)
    movies = statistics["movies"]
    plot = folder / HISTOGRAMS_FILE
    plot.write_bytes(
        session_histograms_png(
            [mean_defocus(m) / 1e4 for m in movies],
            [m["total_motion"] for m in movies],
            [m["fit_resolution"] or 0.0 for m in movies],
        )
    )
    (folder / STATISTICS_FILE).write_text(json.dumps(statistics, indent=2))
    return plot


def session_summary(statistics: dict[str, Any], still_running: int, folder: Path) -> dict[str, Any]:
    """The session-summary run's result: the statistics without the per-movie list."""
    return {
        "n_movies": statistics["n_movies"],
        "movies_still_running": still_running,
        "defocus_angstrom": statistics["defocus_angstrom"],
        "total_motion_angstrom": statistics["total_motion_angstrom"],
        "fit_resolution_angstrom": statistics["fit_resolution_angstrom"],
        "session_folder": str(folder),
    }


def session_result_files(folder: Path) -> list[tuple[Path, str]]:
    """The session's files to attach to the summary job: statistics first."""
    files = [(folder / STATISTICS_FILE, "Result")]
    if (folder / CTF_STAR).exists():
        files += [(folder / HISTOGRAMS_FILE, "Graph"), (folder / CTF_STAR, "Result")]
    return files
