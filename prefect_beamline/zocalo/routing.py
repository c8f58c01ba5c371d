"""Which deployment a Zocalo recipe runs: the routing table (Zocalo's Mimas decides this).

`zocalo_recipes` maps a recipe to `automatic`, where the collection's event goes through
the outbox and the triggers of prefect.yaml pick the deployments (what dodal's
`["mimas"]` asks for), or to one deployment, `flow-name/deployment-name` (or its name
alone), which gets a manual run (what `zocalo.go -r <recipe> <dcid>` asks for). A recipe
named like a deployment of prefect.yaml routes to that deployment without an entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

AUTOMATIC = "automatic"


class UnknownRecipe(LookupError):
    """A recipe the routing table does not name."""


@dataclass(frozen=True)
class Route:
    recipe: str
    deployment: str | None  # None: automatic

    @property
    def automatic(self) -> bool:
        return self.deployment is None


@dataclass(frozen=True)
class RoutingTable:
    """recipe -> `automatic` or `flow-name/deployment-name`."""

    routes: Mapping[str, str]

    @classmethod
    def with_deployments(
        cls, configured: Mapping[str, str], deployments: Mapping[str, str]
    ) -> RoutingTable:
        """The configured table over `deployments` (deployment name -> its full name)."""
        return cls({**deployments, **configured})

    def route(self, recipes: Sequence[str]) -> list[Route]:
        """One route per recipe; UnknownRecipe names the first unknown one and the known."""
        if not recipes:
            raise UnknownRecipe(f"the message names no recipe; known: {self.known()}")
        found = []
        for recipe in recipes:
            target = self.routes.get(recipe)
            if target is None:
                raise UnknownRecipe(
                    f"recipe {recipe!r} is not in the routing table (zocalo_recipes); "
                    f"known: {self.known()}"
                )
            found.append(Route(recipe, None if target == AUTOMATIC else target))
        return found

    def known(self) -> str:
        return ", ".join(sorted(self.routes)) or "(none)"


def deployments_of_prefect_yaml() -> dict[str, str]:
    """Each deployment of prefect.yaml routed to by its own name (Prefect finds a
    deployment by its name alone when only one flow has a deployment of that name)."""
    from prefect_beamline.deployments import find_prefect_yaml, read_deployment_specs

    return {spec.name: spec.name for spec in read_deployment_specs(find_prefect_yaml())}
