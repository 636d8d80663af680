"""Where presets live: ./presets first, then the presets folder shipped beside the package."""

from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[2] / "presets"


def preset_dirs() -> list[Path]:
    dirs = [Path.cwd() / "presets", SHIPPED]
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def list_presets() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in preset_dirs():
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def find_spec(name_or_path: str) -> Path:
    """A spec path as given, or the preset of that name (``quickstart`` -> quickstart.yaml)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    return list_presets().get(path.stem if path.suffix == ".yaml" else name_or_path, path)
