"""`prefect-beamline demo em`: a synthetic cryo-EM session processed movie by movie.

Starts the embedded stack, writes a session of movies with known drift and CTF plus a
gain reference, POSTs one `images_ready` event per movie (as a DAQ or `prefect-beamline
watch` does), waits for the per-movie runs the automation starts (in parallel, under the
deployment's concurrency limit), then POSTs `finished` and waits for the session summary.
The report compares every movie's shifts, defocus and astigmatism with the truth.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from prefect_beamline.demo import (
    RUN_TIMEOUT_S,
    daq_event,
    new_collection_id,
    post_event,
    start_demo,
)
from prefect_beamline.events import CollectionEvent, CollectionEventKind
from prefect_beamline.formats.star import read_micrographs
from prefect_beamline.lims import Lims
from prefect_beamline.runs import (
    TERMINAL_STATES,
    FlowRunInfo,
    flow_runs_for_collection,
    wait_for_state,
)
from prefect_beamline.stack import LocalStack
from prefect_beamline.techniques.em import records
from prefect_beamline.techniques.em.session import MOVIE_DEPLOYMENT, SUMMARY_DEPLOYMENT
from prefect_beamline.techniques.em.synth import SyntheticSession, write_em_session

BEAMLINE, VISIT = "m02", "bi23047-1"


def session_parameters(session: SyntheticSession, **overrides: Any) -> dict[str, Any]:
    """What the microscope's DAQ announces with each movie: optics, dose, gain."""
    return {
        "pixel_size_angstrom": session.pixel_size_angstrom,
        "dose_per_frame": session.dose_per_frame,
        "gain_reference": str(session.gain_reference),
        "voltage_kv": session.microscope.voltage_kv,
        "cs_mm": session.microscope.cs_mm,
        "amplitude_contrast": session.microscope.amplitude_contrast,
        "patches_x": 3,
        "patches_y": 3,
        "ctf_tile": 256,
        **overrides,
    }


def em_event(
    kind: CollectionEventKind,
    collection_id: int,
    data_file: Path,
    parameters: dict[str, Any] | None = None,
) -> CollectionEvent:
    """One announcement of the session: a movie's `images_ready`, or `finished`."""
    return daq_event(
        "em",
        collection_id,
        data_file,
        beamline=BEAMLINE,
        visit=VISIT,
        kind=kind,
        processing_parameters=parameters or {},
    )


def wait_for_runs(
    stack: LocalStack, deployment: str, collection_id: int, count: int, timeout_s: float
) -> list[FlowRunInfo]:
    """The first `count` runs of a deployment for a collection, once all are final."""
    deadline = time.monotonic() + timeout_s
    runs: list[FlowRunInfo] = []
    while time.monotonic() < deadline:
        runs = flow_runs_for_collection(stack.api_url, deployment, collection_id)
        if len(runs) >= count and all(r.state in TERMINAL_STATES for r in runs):
            return runs
        time.sleep(0.3)
    states = [r.state for r in runs]
    raise TimeoutError(
        f"{deployment}: {len(runs)} runs for dc{collection_id} ({states}) after {timeout_s} s, "
        f"expected {count} finished"
    )


def angle_difference(a: float, b: float) -> float:
    """Smallest difference of two axis angles (degrees, modulo 180)."""
    d = (a - b) % 180.0
    return min(d, 180.0 - d)


def compare_with_truth(session: SyntheticSession, lims: Lims, collection_id: int) -> list[dict]:
    """Per movie: estimated vs true shifts, defocus, astigmatism angle; fit resolution."""
    by_path = {m.path.name: m for m in session.movies}
    rows = []
    for recorded in records.em_results(lims, collection_id):
        name = Path(recorded.movie.path).name
        truth = by_path[name]
        drift = recorded.result.motion.drift
        shifts = np.asarray(drift)
        error = float(np.abs(shifts - truth.shifts).max()) if shifts.size else math.inf
        ctf = recorded.result.ctf
        u, v = (ctf.defocus_u, ctf.defocus_v) if ctf else (0.0, 0.0)
        angle = ctf.angle_deg if ctf else 0.0
        rows.append(
            {
                "movie": name,
                "program_id": recorded.program_id,
                "shifts_px": [[round(x, 2), round(y, 2)] for x, y in drift],
                "max_shift_error_px": round(error, 3),
                "defocus_u": round(u, 1),
                "defocus_v": round(v, 1),
                "astigmatism": round(abs(u - v), 1),
                "astigmatism_angle": round(angle, 2),
                "fit_resolution_angstrom": round(ctf.fit_resolution if ctf else 0.0, 2),
                "true_defocus_u": round(truth.ctf.defocus_u, 1),
                "true_defocus_v": round(truth.ctf.defocus_v, 1),
                "true_astigmatism_angle": round(truth.ctf.angle_deg, 2),
                "defocus_error_pct": round(
                    100 * abs(0.5 * (u + v) - truth.ctf.mean_defocus) / truth.ctf.mean_defocus, 3
                ),
                "angle_error_deg": round(angle_difference(angle, truth.ctf.angle_deg), 2),
            }
        )
    return rows


def run_demo(
    workdir: Path | None = None, *, n_images: int | None = None, stack: LocalStack | None = None
) -> dict[str, Any]:
    """Run the demo (on `stack`, else an embedded one) and return its report (`--json`);
    `n_images` = movies."""
    n_movies = n_images or 4
    with start_demo(workdir, stack) as demo:
        stack = demo.stack
        session = write_em_session(
            demo.workdir / "data" / BEAMLINE / VISIT / "GridSquare_1" / "Data",
            n_movies=n_movies,
            n_frames=10,
            shape=(512, 512),
            seed=11,
        )
        collection_id = new_collection_id()
        parameters = session_parameters(session)
        posted = time.monotonic()
        for movie in session.movie_paths:
            post_event(
                stack, em_event(CollectionEventKind.images_ready, collection_id, movie, parameters)
            )
        movie_runs = wait_for_runs(stack, MOVIE_DEPLOYMENT, collection_id, n_movies, RUN_TIMEOUT_S)
        movies_done_s = time.monotonic() - posted
        post_event(
            stack,
            em_event(CollectionEventKind.finished, collection_id, session.movie_paths[-1]),
        )
        summary_run = wait_for_runs(stack, SUMMARY_DEPLOYMENT, collection_id, 1, RUN_TIMEOUT_S)[0]
        summary_run = wait_for_state(stack.api_url, summary_run.id, TERMINAL_STATES, 10)
        lims = demo.lims
        star_file = (
            session.directory / "processing" / "em" / f"dc{collection_id}" / "micrographs_ctf.star"
        )
        states = [run.state for run in movie_runs] + [summary_run.state]
        report: dict[str, Any] = {
            "state": "COMPLETED" if all(s == "COMPLETED" for s in states) else "FAILED",
            "collection_id": collection_id,
            "movie_runs": [{"id": r.id, "name": r.name, "state": r.state} for r in movie_runs],
            "summary_run": {"id": summary_run.id, "state": summary_run.state},
            "flow_run_name": summary_run.name,
            "movies": compare_with_truth(session, lims, collection_id),
            "star_file": str(star_file),
            "star_rows": len(read_micrographs(star_file)),
            "lims_jobs": len(lims.jobs_for_collection(collection_id)),
            "events_to_all_movies_done_s": round(movies_done_s, 1),
            "total_s": round(time.monotonic() - demo.started, 1),
            "workdir": str(demo.workdir),
            "ui_url": stack.ui_url,
        }
        if report["state"] != "COMPLETED":
            report["logs"] = stack.logs()
        return report


def print_report(report: dict[str, Any]) -> None:
    """The human-readable form of the report."""
    print(f"session dc{report['collection_id']}: {report['state']}")
    print(f"{len(report['movie_runs'])} movie runs; summary run {report['summary_run']['state']}")
    print(f"events -> all movies done in {report['events_to_all_movies_done_s']} s")
    print(
        f"\n{'movie':<28} {'max shift err':>13} {'defocus U/V (Å)':>17} {'angle':>6} "
        f"{'true U/V (Å)':>15} {'true ang':>8} {'fit res (Å)':>11}"
    )
    for m in report["movies"]:
        print(
            f"{m['movie']:<28} {m['max_shift_error_px']:>13.2f} "
            f"{m['defocus_u']:>8.0f}/{m['defocus_v']:<8.0f} {m['astigmatism_angle']:>6.1f} "
            f"{m['true_defocus_u']:>7.0f}/{m['true_defocus_v']:<7.0f} "
            f"{m['true_astigmatism_angle']:>8.1f} {m['fit_resolution_angstrom']:>11.2f}"
        )
    print(f"\nSTAR       {report['star_file']} ({report['star_rows']} rows)")
    print(f"LIMS jobs  {report['lims_jobs']}")
    print(f"UI         {report['ui_url']}  (the server stopped with the demo)")
    if "logs" in report:
        print(f"\nlogs of the stack:\n{report['logs']}")
