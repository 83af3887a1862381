"""Physically motivated scene rules: named statistics (see cpu_features) -> class probabilities.

Each category gets one logit per class, built from a few interpretable margins of the form
``gain * (statistic - pivot)``. Pivots sit where the physics says the regime changes (e.g. a sky
brighter than ~0.3 in luminance is daylight-lit); gains set how quickly confidence saturates. The
logits go through a softmax, so confidence = max probability, and weak or conflicting evidence
yields a flat distribution that the taxonomy threshold turns into None.
"""

from __future__ import annotations

import math

Stats = dict[str, float]


def _softmax(logits: dict[str, float]) -> dict[str, float]:
    m = max(logits.values())
    e = {k: math.exp(v - m) for k, v in logits.items()}
    z = sum(e.values())
    return {k: v / z for k, v in e.items()}


def _clip(x: float, lo: float = -4.0, hi: float = 4.0) -> float:
    return max(lo, min(hi, x))


def daylight(s: Stats) -> float:
    """0..1: how strongly the scene is lit by the sky (used to mute weather rules at night)."""
    return 1.0 / (1.0 + math.exp(-14.0 * (s["top_lum"] - 0.3)))


TIME_TEMPERATURE = 1.7  # softens the rule logits; chosen so confidence tracks accuracy on real photos


def time_probs(s: Stats) -> dict[str, float]:
    """Time of day.

    - Sky luminance (top third) is the primary signal: a daylit sky is bright (>0.4), a night sky is
      dark (<0.2) even under urban sky-glow.
    - Night scenes are dominated by dark pixels and lit by small bright point sources (lamps,
      headlights) rather than by a bright extended sky (bright_frac is small).
    - Dawn/dusk: low sun gives a warm (orange/pink, R > B) sky band while the foreground falls into
      shadow, so the sky is much brighter than the ground (silhouettes); the warm-sky fraction is
      the distinctive cue, with the colour temperature (R - B of the lit sky) as support.
    - Day: bright sky and a lit foreground, with neutral or blue (B > R) sky colour. A blue sky is
      pale and bright by day (Rayleigh scattering of direct sun) but deep and dark in the blue hour.
    """
    sky, fg, warm = s["top_lum"], s["fg_lum"], s["sky_warm_frac"]
    bright = s["bright_frac"]
    night = 14.0 * (0.24 - sky) + 12.0 * (0.08 - bright) + 300.0 * min(s["lamp_frac"], 0.01)
    day = (10.0 * (sky - 0.38) + 8.0 * (fg - 0.26) + 6.0 * (bright - 0.15) - 12.0 * warm
           - 6.0 * (s["dark_frac"] - 0.1)
           - 8.0 * max(s["sky_rb"], 0.0))
    if s["blue_sky_lum"] >= 0.0:  # pale bright blue = day; deep dark blue = blue hour
        day += 10.0 * (s["blue_sky_lum"] - 0.47)
    silhouette = (s["dark_frac"] - 0.1) * min(1.0, sky / 0.3)  # dark ground only counts under a lit sky
    dusk = (10.0 * warm + 8.0 * s["sky_rb"] + 4.0 * (sky - fg - 0.2) + 6.0 * silhouette
            - 25.0 * (sky - 0.42) ** 2 + 0.5)
    t = TIME_TEMPERATURE
    return _softmax({"day": _clip(day) / t, "night": _clip(night) / t, "dawn_dusk": _clip(dusk) / t})


def weather_probs(s: Stats) -> dict[str, float]:
    """Weather.

    - foggy: airlight adds a bright grey veil, so the dark channel (min over RGB and a 7x7 patch,
      He et al.'s dark-channel prior) is high everywhere, while contrast, colour saturation and edge
      energy all collapse.
    - snowy: ground cover that is bright, near-white and unsaturated in the bottom third while the
      image keeps normal contrast (unlike fog, which whitens everything uniformly).
    - rainy: a wet road acts as a mirror: small specular highlights in the bottom third under an
      overcast (grey, unsaturated, no blue) sky, and a darker road than the sky.
    - clear: blue, saturated sky pixels in the top third and strong contrast (hard shadows).
    - cloudy: a bright but grey, unsaturated sky with ordinary contrast (not a fog veil).
    At night the sky colour is not observable, so all margins except fog/rain are shrunk.
    """
    dl = daylight(s)
    fog = (12.0 * (s["dark_channel"] - 0.36) + 8.0 * (0.3 - s["rms_contrast"])
           + 80.0 * (0.03 - s["edge_mean"]) + 10.0 * (0.1 - s["sat_mean"]))
    fog = _clip(fog, -6.0, 4.0)
    not_fog = max(0.0, -fog) / 6.0  # 0..1, how clearly the image is NOT veiled
    snow = 16.0 * (s["white_bot_frac"] - 0.2) + 1.0 * not_fog
    grey_sky = _clip(10.0 * (0.12 - s["top_sat"]) + 8.0 * (0.05 - s["top_blue_frac"]), -3.0, 2.0)
    wet = 300.0 * min(s["bot_spec"], 0.01) + 8.0 * (0.12 - s["bot_sat"])  # mirror-like, grey road
    rain = dl * grey_sky + wet - 3.5
    clear = dl * (8.0 * (s["top_blue_frac"] - 0.12) + 8.0 * (s["top_sat"] - 0.12)
                  + 4.0 * (s["rms_contrast"] - 0.35))
    cloudy = dl * (grey_sky + 3.0 * not_fog - 1.0) - max(wet, 0.0)
    p = _softmax({"clear": _clip(clear), "cloudy": _clip(cloudy), "rainy": _clip(rain),
                  "foggy": fog, "snowy": _clip(snow)})
    # Sky-based evidence (clear vs cloudy) is unobservable in the dark: move that share of the
    # clear/cloudy mass to a uniform distribution, so night scenes without fog/rain/snow cues
    # come out flat (-> None) instead of guessing.
    lost = (p["clear"] + p["cloudy"]) * (1.0 - dl)
    p["clear"] *= dl
    p["cloudy"] *= dl
    return {k: v + lost / len(p) for k, v in p.items()}


def road_probs(s: Stats) -> dict[str, float]:
    """Road type.

    - city: buildings, poles and facades produce strong vertical edges in the upper two thirds and
      a cluttered, textured skyline (high gradient energy in the sky band).
    - highway: an open view: few vertical structures, a smooth, wide sky band and long horizontal /
      diagonal lane lines and barriers.
    Both cues are weakened by fog (everything far away vanishes), so the margin is shrunk when the
    image has very little edge energy.
    """
    z = (14.0 * (s["vert_ratio"] - 0.25) + 20.0 * (s["top_grad"] - 0.04)
         + 3.0 * (0.75 - s["top_smooth"]))
    texture = min(1.0, s["edge_mean"] / 0.03)
    z = _clip(z * (0.4 + 0.6 * texture))
    p_city = 1.0 / (1.0 + math.exp(-z))
    return {"city": p_city, "highway": 1.0 - p_city}


def location_probs(s: Stats) -> dict[str, float]:
    """Inside (tunnel, car park) vs outside.

    - Outside there is a sky: the top third is the brightest band by day (top_lum > mid_lum) and is
      smooth; by night it is dark, smooth and lamp-free. Blue sky pixels are decisive.
    - Inside, a ceiling closes the top: the top band is no brighter than the middle, it carries
      structure (beams, light rows) and artificial point lights, and there is no blue sky.
    """
    z = (-2.0 + 6.0 * (s["mid_lum"] - s["top_lum"]) + 400.0 * s["lamp_top_frac"]
         + 10.0 * (s["top_grad"] - 0.06) - 4.0 * s["top_bright_smooth"] - 6.0 * s["top_blue_frac"])
    z = _clip(z, -5.0, 5.0)
    p_in = 1.0 / (1.0 + math.exp(-z))
    return {"inside": p_in, "outside": 1.0 - p_in}


def all_probs(s: Stats) -> dict[str, dict[str, float]]:
    return {"time": time_probs(s), "weather": weather_probs(s), "road": road_probs(s),
            "location": location_probs(s)}
