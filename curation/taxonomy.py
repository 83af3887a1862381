"""The tag taxonomy: categories, their classes, and the confidence below which a tag is None."""

from __future__ import annotations

from dataclasses import dataclass, field

CATEGORIES: tuple[str, ...] = ("time", "weather", "road", "location")

DEFAULT_CLASSES: dict[str, tuple[str, ...]] = {
    "time": ("day", "night", "dawn_dusk"),
    "weather": ("clear", "cloudy", "rainy", "foggy", "snowy"),
    "road": ("city", "highway"),
    "location": ("inside", "outside"),
}

# A prediction whose confidence is below its category's threshold is reported as None.
DEFAULT_THRESHOLDS: dict[str, float] = {"time": 0.6, "weather": 0.5, "road": 0.6, "location": 0.6}


@dataclass(frozen=True)
class Taxonomy:
    """Classes per category and the confidence threshold under which a tag becomes None."""

    classes: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_CLASSES))
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.classes)

    def decide(self, category: str, label: str, confidence: float) -> str | None:
        """Return the label, or None when the confidence is under the category's threshold."""
        return label if confidence >= self.thresholds.get(category, 0.5) else None


DEFAULT_TAXONOMY = Taxonomy()
