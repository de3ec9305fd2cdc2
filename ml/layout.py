"""The original system's folder layout: `{look}_{k}_part.{jpg,png}` snapshots, `{look}_{k}_reco.{jpg,png}` items."""
import re
from dataclasses import dataclass

SNAPSHOT, ITEM = "snapshot", "item"
_PATTERN = re.compile(r"^(?P<look>\d+)_(?P<k>\d+)_(?P<kind>part|reco)\.(?:jpe?g|png)$", re.IGNORECASE)


@dataclass(frozen=True)
class LayoutName:
    look: str
    k: int
    role: str  # SNAPSHOT or ITEM


def parse_layout_name(file_name: str) -> LayoutName | None:
    """The look, index and role a file name encodes, or None for a name outside the layout."""
    match = _PATTERN.match(file_name)
    if match is None:
        return None
    role = SNAPSHOT if match["kind"].lower() == "part" else ITEM
    return LayoutName(look=str(int(match["look"])), k=int(match["k"]), role=role)
