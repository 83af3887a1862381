"""Deterministic synthetic driving scenes for demos and tests (generated on demand, never committed).

Each scene is a small perspective world (camera height 1, road along +z) drawn with PIL on parallel layers
(colour, material 0 sky/1 outdoor/2 tunnel/3 road, fog depth, emitted light), then lit and weathered in numpy.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from curation.taxonomy import DEFAULT_CLASSES

TIMES: tuple[str, ...] = ("day", "night", "dawn_dusk")
WEATHERS: tuple[str, ...] = ("clear", "cloudy", "rainy", "foggy", "snowy")
ROADS: tuple[str, ...] = ("city", "highway")
CSV_COLUMNS: tuple[str, ...] = ("file", "time", "weather", "road", "location")
JPEG_QUALITY = 88

Color = tuple[int, int, int]
Point = tuple[float, float, float]
_SKY = {"day": ((55, 115, 205), (120, 170, 230), (190, 215, 240)),
        "night": ((3, 5, 18), (10, 14, 35), (32, 36, 62)),
        "dawn_dusk": ((40, 50, 115), (200, 110, 130), (255, 170, 80))}
_LIGHT = {"day": (1.0, 1.0, 1.0), "dawn_dusk": (0.85, 0.68, 0.6), "night": (0.15, 0.17, 0.25)}
_DIM = {"clear": 1.0, "cloudy": 0.82, "rainy": 0.68, "foggy": 0.85, "snowy": 0.95}
_FOG = {"day": (200, 203, 207), "dawn_dusk": (205, 180, 170), "night": (45, 48, 58)}
_CLOUD = {"day": (240, 240, 242), "night": (40, 42, 55), "dawn_dusk": (235, 160, 150)}
_GLOW = {"day": 0.0, "dawn_dusk": 0.6, "night": 1.0}
_CARS: tuple[Color, ...] = ((200, 200, 205), (30, 30, 35), (150, 20, 25), (20, 50, 120), (120, 125, 130),
                            (230, 230, 225), (60, 90, 60), (180, 140, 40))
_FACADES: tuple[Color, ...] = ((150, 80, 60), (170, 165, 150), (120, 120, 125), (95, 110, 125),
                               (190, 180, 160), (110, 90, 80))
_WHITE, _SNOW, _STEEL = (225, 225, 220), (232, 235, 240), (70, 72, 76)


def scene_labels(index: int) -> dict[str, str]:
    """Labels of scene `index`: every (road, time, weather) triple once per 30 scenes, 1 tunnel per 12."""
    inside = index % 12 == 6 + (index // 12) % 6  # the tunnel's slot moves so it meets every time/road
    return {"time": TIMES[(index // 2) % 3], "weather": WEATHERS[(index // 6) % 5],
            "road": ROADS[index % 2], "location": "inside" if inside else "outside"}


def _scale(c: Sequence[float], k: float) -> Color:
    return tuple(int(min(255, max(0, v * k))) for v in c)  # type: ignore[return-value]


class _Canvas:
    def __init__(self, size: tuple[int, int], rng: np.random.Generator, glow: float, wet: bool) -> None:
        self.w, self.h = size
        self.rng, self.g, self.wet, self.tint = rng, glow, wet, (1.0, 1.0, 1.0)
        self.hy = self.h * (0.44 + rng.uniform(-0.04, 0.04))
        self.vx = self.w * (0.5 + rng.uniform(-0.08, 0.08))
        self.cx = rng.uniform(-0.4, 0.4)  # lateral camera offset within the lane
        self.f = self.h - self.hy  # ground at z=1 meets the bottom edge
        rows = np.arange(self.h, dtype=np.float32)[:, None] - self.hy
        depth = 255.0 / (1.0 + 10.0 * np.where(rows > 0.5, rows, 0.0) / self.f)  # 255*z/(z+10), sky 255
        self.img, self.mat, self.glow = Image.new("RGB", size), Image.new("L", size), Image.new("RGB", size)
        self.depth = Image.fromarray(np.repeat(depth, self.w, axis=1).astype(np.uint8))
        self.d = [ImageDraw.Draw(im) for im in (self.img, self.mat, self.depth, self.glow)]

    def p(self, x: float, y: float, z: float) -> tuple[float, float]:
        return (self.vx + self.f * (x - self.cx) / z, self.hy + self.f * (1.0 - y) / z)

    def poly(self, pts: Sequence[Point], color: Color, mat: int = 1, depth: bool = True) -> None:
        xy = [self.p(*q) for q in pts]
        self.d[0].polygon(xy, fill=color)
        self.d[1].polygon(xy, fill=mat)
        if depth:
            z = sum(q[2] for q in pts) / len(pts)
            self.d[2].polygon(xy, fill=int(255 * z / (z + 10)))

    def quad(self, x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, color: Color,
             mat: int = 1, depth: bool = True) -> None:
        """Planar quad: a wall (x0 == x1), the ground (y0 == y1) or a face towards the camera (z0 == z1)."""
        pts = ([(x0, y0, z0), (x0, y1, z0), (x0, y1, z1), (x0, y0, z1)] if x0 == x1 else
               [(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)] if y0 == y1 else
               [(x0, y0, z0), (x1, y0, z0), (x1, y1, z0), (x0, y1, z0)])
        self.poly(pts, color, mat, depth)

    def light(self, x: float, y: float, z: float, r: float, color: Color) -> None:
        """An emitting point (lamp, headlight); on a wet road also its smeared reflection."""
        if self.g <= 0:
            return
        (px, py), rad, col = self.p(x, y, z), max(1.0, self.f * r / z), _scale(color, self.g)
        self.d[3].ellipse([px - rad, py - rad, px + rad, py + rad], fill=col)
        if self.wet:
            yg = self.p(x, 0, z)[1]
            ry = min((yg - py) * 0.35, self.f * 0.8 / z) + rad
            self.d[3].ellipse([px - rad, yg + rad - ry * 0.2, px + rad, yg + rad + ry], fill=_scale(col, 0.4))


def _lanes(c: _Canvas, xs: Sequence[float], dashed: bool, z1: float, col: Color, mat: int) -> None:
    phase = c.rng.uniform(0, 6)
    for x in xs:
        for za in np.arange(0.3 + phase, z1, 6.0) if dashed else [0.3]:
            c.quad(x - 0.08, x + 0.08, 0, 0, za, za + 2.5 if dashed else z1, col, mat, depth=False)


def _vehicle(c: _Canvas, x: float, z: float, oncoming: bool) -> None:
    truck = c.rng.random() < 0.2
    w, h, ln = (1.8, 2.6, 8.0) if truck else (1.3, 1.05, 3.2)
    body = _CARS[int(c.rng.integers(len(_CARS)))]
    c.quad(x - w / 2 - 0.1, x + w / 2 + 0.1, 0, 0, z, z + ln, (25, 25, 28), depth=False)  # shadow
    side = x - w / 2 if x > c.cx else x + w / 2
    c.quad(side, side, 0.2, h, z, z + ln, _scale(body, 0.7))
    c.quad(x - w / 2, x + w / 2, 0.2, h, z, z, body)
    if not truck:
        c.poly([(x - w * .42, .62, z), (x + w * .42, .62, z), (x + w * .34, .98, z), (x - w * .34, .98, z)],
               (40, 45, 55))
    col = (255, 245, 220) if oncoming else (230, 30, 25)
    for s in (-1, 1):
        c.quad(x + s * w / 2, x + s * (w / 2 - 0.25), 0, 0.25, z, z, (15, 15, 15))
        c.quad(x + s * w * 0.37 - 0.12, x + s * w * 0.37 + 0.12, 0.42, 0.54, z, z, _scale(col, 0.8))
        c.light(x + s * w * 0.37, 0.48, z - 0.01, 0.13, col)


def _traffic(c: _Canvas, same: Sequence[float], oncoming: Sequence[float]) -> None:
    cars = [(c.rng.uniform(4, 70), x, False) for x in same if c.rng.random() < 0.6]
    cars += [(c.rng.uniform(4, 90), x, True) for x in oncoming if c.rng.random() < 0.5]
    for z, x, onc in sorted(cars, reverse=True):
        _vehicle(c, x, z, onc)


def _lamp(c: _Canvas, x: float, z: float, height: float, arms: Sequence[float], col: Color) -> None:
    c.quad(x - 0.08, x + 0.08, 0, height, z, z, _STEEL)
    for a in arms:
        c.quad(x, x + a, height - 0.1, height, z, z, _STEEL)
        c.light(x + a, height - 0.15, z, 0.18, col)


def _city(c: _Canvas, lab: dict[str, str]) -> None:
    rng, snowy = c.rng, lab["weather"] == "snowy"
    lit_share = {"day": 0.0, "dawn_dusk": 0.3, "night": 0.45}[lab["time"]]
    for side in (-1, 1):
        items, z, x = [], 2.0 + rng.uniform(0, 2), side * 6.2
        while z < 110:
            d = rng.uniform(4, 12)
            items.append((z, z + d, rng.uniform(4, 22), _FACADES[int(rng.integers(len(_FACADES)))]))
            z += d + (rng.uniform(0.5, 3) if rng.random() < 0.3 else 0)
        for z1, z2, h, col in reversed(items):  # far to near, so near buildings paint over far ones
            c.quad(x, x + side * 6, 0, h, z1, z1, _scale(col, 0.75))
            zs = np.linspace(z1, z2, max(1, int((z2 - z1) / 2.5)) + 1)
            for za, zb in zip(zs[:-1], zs[1:]):
                c.quad(x, x, 0, h, za, zb, col)
                if snowy:
                    c.quad(x, x, h - 0.25, h, za, zb, _SNOW)
                for y0 in np.arange(0.9, h - 1.3, 1.8):
                    c.quad(x, x, y0, y0 + 1.0, za + 0.45, zb - 0.45, (85, 100, 120))
                    if rng.random() < lit_share:
                        pts = [c.p(x, y, zz) for y, zz in ((y0, za + .45), (y0 + 1, za + .45), (y0 + 1, zb - .45),
                                                           (y0, zb - .45))]
                        c.d[3].polygon(pts, fill=_scale((255, 205, 130), 0.4 * c.g))
    for z in sorted(np.arange(3 + rng.uniform(0, 10), 100, 14.0), reverse=True):
        for side in (-1, 1):
            _lamp(c, side * 4.8, z, 5.5, [-side * 1.4], (255, 215, 150))
    _traffic(c, (1.1, 3.3), (-1.1, -3.3))


def _highway(c: _Canvas, lab: dict[str, str]) -> None:
    rng, snowy = c.rng, lab["weather"] == "snowy"
    xs = np.linspace(0, c.w, 12)
    tops = c.hy - c.h * rng.uniform(0.01, 0.09, 12) * (0.5 + np.sin(xs / c.w * rng.uniform(2, 6)) ** 2)
    hills = [(0, c.hy + 1), *zip(xs, tops), (c.w, c.hy + 1)]
    for d, fill in zip(c.d, ((215, 218, 225) if snowy else (85, 115, 110), 1, 250)):
        d.polygon(hills, fill=fill)
    trees = [(rng.choice([-1, 1]) * rng.uniform(8, 40), rng.uniform(4, 160)) for _ in range(40)]
    objs = [(z, "tree", x) for x, z in trees if not -17 < x < 7]
    objs += [(z, "lamp", -4.8) for z in np.arange(5 + rng.uniform(0, 20), 160, 30.0)]
    objs += [(z, "rail", 0.0) for z in np.arange(1.0, 120, 3.0)]
    for z, kind, x in sorted(objs, reverse=True):
        if kind == "tree":
            green = _SNOW if snowy else _scale((40, 85, 45), rng.uniform(0.7, 1.2))
            c.quad(x - 0.2, x + 0.2, 0, 1.5, z, z, (70, 50, 35))
            c.poly([(x - 1.6, 1.2, z), (x + 1.6, 1.2, z), (x, 1.2 + rng.uniform(4, 8), z)], green)
        elif kind == "lamp":
            _lamp(c, x, z, 7.0, [-1.8, 1.8], (255, 225, 170))
        else:  # guard rails on the median and the right shoulder
            for rx in (-4.8, 4.7):
                c.quad(rx, rx, 0.35, 0.6, z, z + 3, (165, 170, 178))
                c.quad(rx - 0.05, rx + 0.05, 0, 0.6, z, z, (120, 122, 128))
    _traffic(c, (-2.4, 0.0, 2.4), (-7.1, -9.4, -11.7))


def _tunnel(c: _Canvas, zexit: float) -> None:
    sodium = c.rng.random() < 0.5
    lamp, c.tint = ((255, 170, 70), (0.85, 0.7, 0.5)) if sodium else ((225, 235, 255), (0.7, 0.74, 0.8))
    wall = _scale(_FACADES[int(c.rng.integers(len(_FACADES)))], 1.15)
    c.quad(-5, 5, 0, 0, 0.3, zexit, (70, 70, 72), mat=2, depth=False)
    _lanes(c, (-4.3, 4.3), False, zexit, (200, 200, 200), 2)
    _lanes(c, (0.0,), True, zexit, (200, 200, 200), 2)
    section = [(-5, 0), (-5, 3.5), (-3.5, 5.3), (3.5, 5.3), (5, 3.5), (5, 0)]
    for k, za in enumerate(np.arange(0.3, zexit, 4.0)[::-1]):
        zb = min(za + 4, zexit)
        for i, ((xa, ya), (xb, yb)) in enumerate(zip(section[:-1], section[1:])):
            shade = wall if i in (0, 4) else (95, 95, 100)  # tiled walls, concrete ceiling
            c.poly([(xa, ya, za), (xb, yb, za), (xb, yb, zb), (xa, ya, zb)], _scale(shade, 1 - 0.06 * (k % 2)), 2)
        for lx in (-1.8, 1.8):
            c.quad(lx - 0.15, lx + 0.15, 5.25, 5.25, za + 0.5, za + 2.5, (255, 250, 235), 2)
            c.light(lx, 5.25, za + 1.5, 0.16, lamp)
    _traffic(c, (-2.15, 2.15), ())


def _sky(c: _Canvas, time: str, weather: str) -> np.ndarray:
    stops = np.array(_SKY[time], dtype=np.float32)
    s = np.clip(np.arange(c.h, dtype=np.float32) / max(c.hy, 1.0), 0, 1)[:, None]
    col = np.where(s < 0.5, stops[0] + (stops[1] - stops[0]) * s * 2, stops[1] + (stops[2] - stops[1]) * (s * 2 - 1))
    grey = {"clear": 0.0, "cloudy": 0.6, "rainy": 0.85, "foggy": 0.5, "snowy": 0.7}[weather]
    col = col * (1 - grey) + col.mean(axis=1, keepdims=True) * grey * (0.8 if weather == "rainy" else 1.0)
    layer, bright = Image.new("L", (c.w, c.h)), Image.new("L", (c.w, c.h))
    d, db = ImageDraw.Draw(layer), ImageDraw.Draw(bright)
    for _ in range({"clear": 3, "cloudy": 16, "rainy": 20, "foggy": 0, "snowy": 14}[weather]):
        x, y, rx = c.rng.uniform(0, c.w), c.rng.uniform(0, c.hy * 0.9), c.rng.uniform(0.05, 0.2) * c.w
        d.ellipse([x - rx, y - rx * 0.3, x + rx, y + rx * 0.3], fill=int(c.rng.integers(120, 255)))
    if weather == "clear" and time == "night":
        db.point([(float(x), float(y)) for x, y in zip(c.rng.uniform(0, c.w, 80), c.rng.uniform(0, c.hy * .7, 80))],
                 fill=200)
    elif weather == "clear" and time == "dawn_dusk":  # a low sun, hidden by anything in front of the sky
        sx = c.rng.uniform(0.15, 0.85) * c.w
        r = c.h / 26
        db.ellipse([sx - r, c.hy - 3.2 * r, sx + r, c.hy - 1.2 * r], fill=255)
        bright = bright.filter(ImageFilter.GaussianBlur(3))
    layer = layer.reduce(2).filter(ImageFilter.GaussianBlur(c.h / 50)).resize(layer.size, Image.Resampling.BILINEAR)
    alpha = np.asarray(layer, dtype=np.float32)[..., None] * (0.9 / 255)
    cloud = np.array(_CLOUD[time], dtype=np.float32) * (0.72 if weather in ("cloudy", "rainy") else 1.0)
    sky = col[:, None, :] + (cloud - col[:, None, :]) * alpha
    return sky + np.asarray(bright, dtype=np.float32)[..., None] * np.array((1.0, 0.85, 0.6), dtype=np.float32)


def _ground(c: _Canvas, lab: dict[str, str]) -> None:
    city, snowy, wet = lab["road"] == "city", lab["weather"] == "snowy", lab["weather"] == "rainy"
    grass = _SNOW if snowy else ((120, 125, 120) if city else (85, 120, 60))
    c.d[0].rectangle([0, c.hy, c.w, c.h], fill=grass)
    c.d[1].rectangle([0, c.hy, c.w, c.h], fill=1)
    asphalt = (45, 47, 52) if wet else ((115, 115, 120) if snowy else (85, 85, 90))
    c.quad(-4.4 if city else -13.6, 4.4, 0, 0, 0.3, 600, asphalt, mat=3, depth=False)
    if city:
        _lanes(c, (-0.1, 0.1), False, 300, (220, 180, 40), 3)
        _lanes(c, (-2.2, 2.2), True, 300, _WHITE, 3)
    else:  # two carriageways split by a grass median
        c.quad(-5.2, -4.4, 0, 0, 0.3, 600, grass, depth=False)
        _lanes(c, (-3.6, 3.6, -6.0, -12.8), False, 300, _WHITE, 3)
        _lanes(c, (-1.2, 1.2, -8.3, -10.5), True, 300, _WHITE, 3)
    for s in (-1, 1) if snowy else ():  # snow piled on the road edges
        c.quad(s * 4.4, s * 3.3, 0, 0, 0.3, 600, _SNOW, depth=False)


def _compose(c: _Canvas, time: str, weather: str) -> np.ndarray:
    """Light the painted layers, add the sky, wet reflections, fog and glow; float RGB in 0..255."""
    img, mat = np.asarray(c.img, dtype=np.float32), np.asarray(c.mat)[..., None]
    light = np.array(_LIGHT[time], dtype=np.float32) * _DIM[weather]
    out = np.where(mat == 0, _sky(c, time, weather), img * np.where(mat == 2, np.float32(c.tint), light))
    if c.wet:  # a blurred mirror image of what is above the horizon on the wet road surface
        src = 2 * int(c.hy) - np.arange(c.h)
        mirror = sum(out[np.clip(src - k, 0, c.h - 1)] for k in (0, 5, 10)) / 3
        below = (mat == 3) & (np.arange(c.h)[:, None, None] > c.hy)
        out = np.where(below, 0.75 * out + 0.25 * mirror, out)
    foggy, q = weather == "foggy", np.asarray(c.depth, dtype=np.float32)
    a = 1 - np.exp(-10.0 * q / np.maximum(255.0 - q, 1e-3) / (9.0 if foggy else 260.0))  # depth from 255*z/(z+10)
    a = np.where(mat[..., 0] == 2, 0.0, np.minimum(a, 0.96))  # no fog inside tunnels
    a = np.where(mat[..., 0] == 0, 0.93 if foggy else 0.0, a)[..., None]
    out += (np.array(_FOG[time], dtype=np.float32) - out) * a
    if c.g > 0:  # light sources plus a halo blurred at half resolution
        halo = c.glow.reduce(2).filter(ImageFilter.GaussianBlur(5 if foggy else 2.5))
        halo = np.asarray(halo.resize(c.img.size, Image.Resampling.BILINEAR), dtype=np.float32)
        out = out + np.asarray(c.glow, dtype=np.float32) * (1 - 0.6 * a) + halo * 1.4
    return out


def _precipitation(image: Image.Image, rng: np.random.Generator, rain: bool) -> Image.Image:
    over = Image.new("RGBA", image.size, (0, 0, 0, 0))
    d, (w, h) = ImageDraw.Draw(over), image.size
    n, u = int(350 * w * h / 230400), h / 360  # particle count and size follow the image size
    for x, y, k in zip(rng.uniform(-40 * u, w, n), rng.uniform(-30 * u, h, n), rng.uniform(0.3, 1, n)):
        if rain:
            d.line([(x, y), (x + 6 * k * u, y + 28 * k * u)], fill=(200, 205, 215, int(110 * k)), width=1)
        else:
            r = 2.5 * k * u
            d.ellipse([x - r, y - r, x + r, y + r], fill=(250, 250, 252, int(230 * k)))
    return Image.alpha_composite(image.convert("RGBA"), over).convert("RGB")


def render_scene(labels: dict[str, str], rng: np.random.Generator,
                 size: tuple[int, int] = (640, 360)) -> Image.Image:
    """Render one scene showing `labels` (time, weather, road, location); deterministic given `rng`."""
    time, weather, inside = labels["time"], labels["weather"], labels["location"] == "inside"
    glow = 1.0 if inside else min(1.0, _GLOW[time] + 0.3 * (weather in ("rainy", "foggy")))
    c = _Canvas(size, rng, glow, weather == "rainy" and not inside)
    c.cx += 2.15 if inside else (1.1 if labels["road"] == "city" else 0.0)  # drive in a right-hand lane
    _ground(c, labels)
    if inside:
        _tunnel(c, rng.uniform(40, 90))
    else:
        (_city if labels["road"] == "city" else _highway)(c, labels)
    out = _compose(c, time, weather)
    out += np.frombuffer(rng.bytes(out.size), np.uint8).reshape(out.shape).astype(np.float32) * (5 / 255) - 2.5
    image = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    return _precipitation(image, rng, weather == "rainy") if weather in ("rainy", "snowy") and not inside else image


def generate_demo_images(folder: Path, count: int = 72, seed: int = 0, size: tuple[int, int] = (640, 360)) -> Path:
    """Write `count` scenes (every 9th PNG, the rest JPEG) and labels.csv into `folder`; return the CSV path.

    Scene i is drawn from numpy's Generator seeded with (seed, i): the same non-negative seed gives
    byte-identical files, and a prefix of a larger set equals a smaller set.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        labels = scene_labels(i)
        image = render_scene(labels, np.random.default_rng([seed, i]), size)
        name = f"demo_{i:03d}.{'png' if i % 9 == 8 else 'jpg'}"
        opts = {"format": "PNG"} if name.endswith(".png") else {"format": "JPEG", "quality": JPEG_QUALITY}
        image.save(folder / name, **opts)  # no EXIF, no timestamps: bytes depend on pixels only
        rows.append({"file": name, **labels})
    csv_path = folder / "labels.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def demo_label_counts(labels_csv: Path) -> dict[str, dict[str, int]]:
    """Images per class per category in a demo labels.csv (the taxonomy's classes listed even when 0)."""
    counts = {cat: dict.fromkeys(DEFAULT_CLASSES.get(cat, ()), 0) for cat in CSV_COLUMNS[1:]}
    with Path(labels_csv).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            for cat, per_class in counts.items():
                per_class[row[cat]] = per_class.get(row[cat], 0) + 1
    return counts
