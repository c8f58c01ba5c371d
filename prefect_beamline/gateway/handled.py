"""Which (technique, experiment type) pairs a deployment processes, read from prefect.yaml.

A collection whose pair no deployment's trigger matches would be accepted and never
processed; the gateway and the Zocalo bridge refuse it at the door instead, naming the
pair and listing what is deployed. A trigger without a `beamline.experiment_type` match
takes every experiment type of its technique (written `tomo/*`). Only triggers on the
`finished` event count: they process a collection; a trigger on `started` alone (the
live path) follows one while it is written, and a collection it sees would still never
be processed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect_beamline.events import (
    EVENT_PREFIX,
    LABEL_EXPERIMENT_TYPE,
    LABEL_TECHNIQUE,
    CollectionEvent,
)

ANY = "*"
PROCESSING_EVENT = f"{EVENT_PREFIX}.finished"


class NotHandled(ValueError):
    """No deployment processes this technique and experiment type."""


@dataclass(frozen=True)
class HandledPairs:
    """The (technique, experiment_type) pairs of the deployments' triggers."""

    pairs: frozenset[tuple[str, str]]

    @classmethod
    def from_prefect_yaml(cls, path: Path | None = None) -> HandledPairs:
        from prefect_beamline.deployments import find_prefect_yaml, read_deployment_specs

        pairs = set()
        for spec in read_deployment_specs(find_prefect_yaml(path)):
            for trigger in spec.triggers:
                if PROCESSING_EVENT not in _values(trigger.get("expect")):
                    continue
                match = trigger.get("match") or {}
                for technique in _values(match.get(LABEL_TECHNIQUE)):
                    for experiment_type in _values(match.get(LABEL_EXPERIMENT_TYPE, ANY)):
                        pairs.add((technique, experiment_type))
        return cls(frozenset(pairs))

    def handles(self, technique: str, experiment_type: str) -> bool:
        return (technique, experiment_type) in self.pairs or (technique, ANY) in self.pairs

    def check(self, event: CollectionEvent) -> None:
        """Raises NotHandled naming the pair and listing the deployed ones."""
        if not self.handles(event.technique, event.experiment_type):
            deployed = ", ".join(f"{t}/{e}" for t, e in sorted(self.pairs))
            raise NotHandled(
                f"no deployment processes technique {event.technique!r} with experiment_type "
                f"{event.experiment_type!r}; deployed: {deployed}"
            )


def _values(value: object) -> list[str]:
    """A trigger's match value: one string or a list of them."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]
