"""A synthetic person re-ID benchmark rendered from a seed: no download, same shape as the real ones.

Each identity fixes a person's look: skin and hair, the colours and pattern of the
upper clothing, the kind and colour of the lower clothing, shoes, an optional bag,
and body proportions. Each camera fixes a background, a colour cast and brightness,
a viewpoint (scale and height in the frame) and a sharpness. Each image adds pose
jitter (position, stance, arm swing, facing left or right), lighting noise and,
sometimes, an occluder in front of the person.

Train and test identities are disjoint. Every test identity is seen by at least two
cameras; its queries come from one or two cameras and the gallery holds the rest of
its images, so each query has a cross-camera match. Distractor identities appear in
the gallery only. Colour statistics alone are confounded by the camera's cast and
background, so an untrained network scores low.

Only numpy is used; the images are uint8 arrays [N, H, W, 3]. `pids` are identity
ids (train and test ranges disjoint), `camids` camera ids in [0, num_cameras).
"""

import colorsys
import dataclasses

import numpy as np

from msml_jax import config as schema
from msml_jax.data.registry import Dataset, register_dataset
from msml_jax.errors import UserError

# Independent random streams: identity looks, camera looks, per-image jitter, splits.
_IDENTITY, _CAMERA, _IMAGE, _LAYOUT = 1, 2, 3, 4
_SUPERSAMPLE = 2  # render at 2x and average down: smooth edges without an image library


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Size of the synthetic benchmark. Defaults train a small CPU model in minutes."""

    num_train_ids: int = 300
    num_test_ids: int = 100
    num_distractors: int = 100
    num_cameras: int = 4
    images_per_camera: tuple = (1, 3)  # inclusive range, per identity and camera
    image_size: tuple = (64, 32)  # (height, width)
    occlusion_prob: float = 0.2


def _rng(*key):
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _hsv(rng, s=(0.25, 1.0), v=(0.25, 1.0)):
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*s), rng.uniform(*v)))


def _identity_look(seed, pid):
    rng = _rng(seed, _IDENTITY, pid)
    skin_tones = np.array([[0.95, 0.80, 0.69], [0.87, 0.68, 0.52], [0.68, 0.49, 0.36], [0.45, 0.32, 0.24]])
    hair_tones = np.array([[0.08, 0.06, 0.05], [0.30, 0.20, 0.12], [0.55, 0.42, 0.25], [0.85, 0.75, 0.50]])
    return dict(
        skin=np.clip(skin_tones[rng.integers(4)] + rng.normal(0, 0.03, 3), 0, 1),
        hair=np.clip(hair_tones[rng.integers(4)] + rng.normal(0, 0.03, 3), 0, 1),
        upper=_hsv(rng),
        upper2=_hsv(rng),
        pattern=rng.choice(["solid", "hstripes", "vstripes", "checks", "twotone"]),
        stripes=rng.integers(3, 7),
        long_sleeves=rng.uniform() < 0.6,
        lower=_hsv(rng, s=(0.1, 0.9), v=(0.15, 0.9)),
        lower_kind=rng.choice(["trousers", "trousers", "shorts", "skirt"]),
        shoes=np.array([0.1, 0.1, 0.1]) if rng.uniform() < 0.6 else _hsv(rng, v=(0.6, 1.0)),
        bag=_hsv(rng) if rng.uniform() < 0.4 else None,
        bag_side=rng.choice([-1, 1]),
        height=rng.uniform(0.78, 0.95),
        width=rng.uniform(0.85, 1.2),
        torso=rng.uniform(0.36, 0.46),
    )


def _camera_look(seed, camid):
    rng = _rng(seed, _CAMERA, camid)
    return dict(
        # A strong per-channel colour cast and brightness: the same shirt looks different per camera.
        gain=np.exp(rng.normal(0.0, 0.22, 3)) * np.exp(rng.normal(0.0, 0.2)),
        wall=_hsv(rng, s=(0.0, 0.5), v=(0.3, 0.9)),
        floor=_hsv(rng, s=(0.0, 0.4), v=(0.2, 0.7)),
        horizon=rng.uniform(0.55, 0.85),
        poles=[(rng.uniform(0, 1), rng.uniform(0.03, 0.12), _hsv(rng, s=(0.0, 0.6))) for _ in range(rng.integers(1, 4))],
        scale=rng.uniform(0.8, 1.05),
        feet=rng.uniform(0.9, 0.99),
        blur=rng.integers(0, 3),
    )


def _render(person, camera, rng, height, width, occlusion_prob):
    """Returns one float image [H, W, 3] in [0, 1]."""
    H, W = height * _SUPERSAMPLE, width * _SUPERSAMPLE
    y = np.arange(H)[:, None] + 0.5
    x = np.arange(W)[None, :] + 0.5
    img = np.empty((H, W, 3))

    # Background: wall, floor, vertical structures; shifted per image as the view jitters.
    horizon = (camera["horizon"] + rng.normal(0, 0.03)) * H
    img[:] = camera["wall"] * (0.85 + 0.3 * y / H)[..., None]
    img[np.broadcast_to(y > horizon, (H, W))] = camera["floor"]
    pan = rng.normal(0, 0.1)
    for pos, pole_width, color in camera["poles"]:
        cx = ((pos + pan) % 1.0) * W
        img[np.broadcast_to((np.abs(x - cx) < pole_width * W) & (y < horizon), (H, W))] = color

    def paint(mask, color):
        img[np.broadcast_to(mask, (H, W))] = color

    # Body layout in pixels of the supersampled canvas.
    hp = person["height"] * camera["scale"] * rng.uniform(0.95, 1.05) * H
    feet = min(camera["feet"] + rng.normal(0, 0.015), 0.995) * H
    top = feet - hp
    cx = W / 2 + rng.normal(0, 0.07) * W
    head_r = 0.075 * hp
    head_cy = top + head_r
    torso_top = top + 2 * head_r + 0.02 * hp
    torso_bot = torso_top + person["torso"] * hp
    half_torso = 0.11 * hp * person["width"]
    leg_w = 0.075 * hp * person["width"]
    stance = rng.uniform(0.0, 0.06) * hp
    shoe_h = 0.04 * hp
    side = person["bag_side"] * (1 if rng.uniform() < 0.5 else -1)  # facing left or right

    # Legs and shoes.
    for s in (-1, 1):
        lx = cx + s * (leg_w / 2 + stance / 2)
        leg = (np.abs(x - lx) < leg_w / 2) & (y >= torso_bot) & (y < feet - shoe_h)
        paint(leg, person["lower"])
        if person["lower_kind"] == "shorts":
            paint(leg & (y > torso_bot + 0.4 * (feet - torso_bot)), person["skin"])
        paint((np.abs(x - lx) < leg_w / 2 + 0.01 * hp) & (y >= feet - shoe_h) & (y < feet), person["shoes"])
    if person["lower_kind"] == "skirt":
        depth = (y - torso_bot) / (0.5 * (feet - torso_bot))
        paint((depth >= 0) & (depth < 1) & (np.abs(x - cx) < half_torso * (1 + 0.5 * depth)), person["lower"])

    # Torso with the identity's pattern, in torso coordinates u (down) and v (across).
    u = (y - torso_top) / (torso_bot - torso_top)
    v = (x - cx) / (2 * half_torso) + 0.5
    torso = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    n = person["stripes"]
    second = {
        "solid": np.zeros_like(u * v, dtype=bool),
        "hstripes": (np.floor(u * n) % 2) == 1,
        "vstripes": (np.floor(v * n) % 2) == 1,
        "checks": ((np.floor(u * n) + np.floor(v * n)) % 2) == 1,
        "twotone": u * np.ones_like(v) > 0.5,
    }[person["pattern"]]
    paint(torso, person["upper"])
    paint(torso & second, person["upper2"])

    # Arms, swinging per image; short sleeves show skin below the elbow.
    arm_w = 0.05 * hp * person["width"]
    arm_len = 0.95 * (torso_bot - torso_top)
    for s in (-1, 1):
        t = (y - torso_top) / arm_len
        ax = cx + s * (half_torso + arm_w / 2) + rng.normal(0, 0.04) * hp * t
        arm = (t >= 0) & (t < 1) & (np.abs(x - ax) < arm_w / 2)
        paint(arm, person["upper"])
        if not person["long_sleeves"]:
            paint(arm & (t > 0.4), person["skin"])

    if person["bag"] is not None:
        bx = cx + side * (half_torso + arm_w)
        paint((np.abs(x - bx) < 0.07 * hp) & (np.abs(y - torso_bot) < 0.08 * hp), person["bag"])

    head = (x - cx) ** 2 + (y - head_cy) ** 2 < head_r**2
    paint(head, person["skin"])
    paint(head & (y < head_cy - 0.25 * head_r), person["hair"])

    if rng.uniform() < occlusion_prob:  # something between camera and person: a car, a sign, a passer-by
        ow, oh = rng.uniform(0.3, 0.6) * W, rng.uniform(0.2, 0.45) * H
        ox, oy = rng.uniform(-0.2, 1.0) * W - ow / 2, feet - oh * rng.uniform(0.3, 1.0)
        paint((x > ox) & (x < ox + ow) & (y > oy) & (y < oy + oh), _hsv(rng))

    # Camera: colour cast and brightness, sharpness, then down to the output size and sensor noise.
    img = img * camera["gain"] * np.exp(rng.normal(0, 0.08))
    for _ in range(int(camera["blur"])):
        img = (img + np.roll(img, 1, 0) + np.roll(img, -1, 0) + np.roll(img, 1, 1) + np.roll(img, -1, 1)) / 5
    img = img.reshape(height, _SUPERSAMPLE, width, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    img = img + rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1)


def _render_split(seed, spec, records, looks, cameras):
    h, w = spec.image_size
    images = np.empty((len(records), h, w, 3), np.uint8)
    for i, (pid, camid, k) in enumerate(records):
        rng = _rng(seed, _IMAGE, pid, camid, k)
        images[i] = np.round(255 * _render(looks[pid], cameras[camid], rng, h, w, spec.occlusion_prob))
    pids = np.array([r[0] for r in records], np.int64)
    camids = np.array([r[1] for r in records], np.int64)
    return {"images": images, "pids": pids, "camids": camids}


def make_synthetic(seed=0, spec=SyntheticSpec()):
    """Renders the benchmark. Deterministic in (seed, spec).

    Returns:
      dict with splits "train", "query", "gallery"; each a dict of numpy arrays
      `images` uint8 [N, H, W, 3], `pids` int64 [N], `camids` int64 [N].
    """
    if spec.num_cameras < 2:
        raise ValueError(f"SyntheticSpec.num_cameras must be at least 2 for cross-camera queries, got {spec.num_cameras}")
    layout = _rng(seed, _LAYOUT)
    lo, hi = spec.images_per_camera
    n_train, n_test = spec.num_train_ids, spec.num_test_ids
    all_ids = n_train + n_test + spec.num_distractors
    looks = {pid: _identity_look(seed, pid) for pid in range(all_ids)}
    cameras = {c: _camera_look(seed, c) for c in range(spec.num_cameras)}

    def sightings(pid, min_cameras):
        cams = layout.permutation(spec.num_cameras)[: layout.integers(min_cameras, spec.num_cameras + 1)]
        return [[(pid, int(c), k) for k in range(layout.integers(lo, hi + 1))] for c in cams]

    train, query, gallery = [], [], []
    for pid in range(n_train):
        train += [r for cam in sightings(pid, 2) for r in cam]
    for pid in range(n_train, n_train + n_test):
        cams = sightings(pid, 2)
        # Queries from one or two cameras, always leaving another camera in the gallery.
        num_query_cams = min(2, len(cams) - 1)
        for i, cam in enumerate(cams):
            if i < num_query_cams:
                query.append(cam[0])
                gallery += cam[1:]
            else:
                gallery += cam
    for pid in range(n_train + n_test, all_ids):
        gallery += sightings(pid, 1)[0]

    return {
        name: _render_split(seed, spec, records, looks, cameras)
        for name, records in (("train", train), ("query", query), ("gallery", gallery))
    }


# The benchmark's sizes as config fields, config.data.synthetic.<field> (defaults: SyntheticSpec's).
_KINDS = {
    "num_train_ids": schema.POSITIVE,
    "num_test_ids": schema.POSITIVE,
    "num_distractors": schema.Int(0, schema.MAX_SIZE),
    "num_cameras": schema.Int(2, 1000),
    "images_per_camera": schema.Pair(schema.Int(1, 1000), ordered=True, what="a range"),
    "image_size": schema.Pair(schema.IMAGE_SIDE, what="(height, width)"),
    "occlusion_prob": schema.PROB,
}
OPTIONS = {f.name: schema.Field(_KINDS[f.name], f.default) for f in dataclasses.fields(SyntheticSpec)}


def load_from_config(data_config, protocol=None):
    """The benchmark of a run's `config.data`: its `seed` and the SyntheticSpec fields in `config.data.synthetic`."""
    options = data_config.get("synthetic")
    options = options.to_dict() if hasattr(options, "to_dict") else dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"unknown field(s) {unknown} in config.data.synthetic: valid fields are {sorted(OPTIONS)}")
    spec = SyntheticSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    return make_synthetic(data_config.seed, spec)


register_dataset(Dataset("synthetic", load=load_from_config, protocols={"image": "image"}, reads_files=False,
                         options=OPTIONS))
