"""One simulated driving scene in MuJoCo: objects on a road, a forward camera image and a forward radar scan.

Frames and units
    The ego vehicle sits at the origin: x forward, y left, z up, metres, seconds, radians. Azimuth is
    ``atan2(y, x)`` (positive to the left). Object velocities are over the ground, written in the ego frame; the
    ego drives along +x at ``ego_speed``, so the radar's Doppler is the *relative* radial speed
    ``(v_object - v_ego) · u`` with ``u`` the unit vector from the radar to the detection.

Shape legend
    O = MAX_OBJECTS object slots   P = MAX_RADAR_POINTS radar slots   H, W = IMAGE_HW

The MuJoCo model is built once per process (``SceneSimulator``): every class has ``MAX_OBJECTS`` mocap bodies,
parked out of sight when unused, so a scene only moves bodies, recolours geoms and changes the fog; nothing is
recompiled. Everything random comes from the ``numpy.random.Generator`` a caller passes (one per scene), so a
scene's content depends only on how that generator was seeded.

Rendering is headless: an EGL context (Mesa's on a CPU machine), or OSMesa where EGL fails or ``MUJOCO_GL=osmesa``
asks for it. The context is opened here rather than through ``mujoco.Renderer``, which picks its back end from
``MUJOCO_GL`` once, when MuJoCo is first imported anywhere in the process. This module imports only NumPy and MuJoCo
(worker processes of ``omni data fusion`` import it alone).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import mujoco
import numpy as np

__all__ = [
    "CLASSES",
    "CONDITIONS",
    "IMAGE_HW",
    "MAX_OBJECTS",
    "MAX_RADAR_POINTS",
    "RADAR_FEATURES",
    "SIMULATOR_VERSION",
    "Scene",
    "SceneSimulator",
    "project_to_image",
]

SIMULATOR_VERSION = 2  # bumped whenever a scene drawn from the same seed changes; recorded in build.json
CLASSES = ("car", "pedestrian", "cyclist")
CONDITIONS = ("clear", "fog", "night", "rain")
IMAGE_HW = (64, 128)
MAX_OBJECTS = 8
MAX_RADAR_POINTS = 64
RADAR_FEATURES = ("range", "azimuth", "doppler", "rcs")  # metres, rad, m/s (positive = receding), dBsm

# Half sizes (x, y, z) in metres; the pedestrian is a capsule of radius 0.3 and 1.7 m tall.
HALF_SIZE = {"car": (2.25, 0.9, 0.75), "pedestrian": (0.3, 0.3, 0.85), "cyclist": (0.9, 0.3, 0.85)}
CLASS_PRIOR = (0.5, 0.25, 0.25)
MAX_SPEED = {"car": 15.0, "pedestrian": 2.0, "cyclist": 7.0}  # m/s over the ground
RCS_DBSM = {"car": 10.0, "pedestrian": -5.0, "cyclist": 2.0}  # mean radar cross-section
RCS_ASPECT, RCS_FLUCTUATION = 3.0, 2.5  # dB: per object (aspect), per detection (Swerling-like scintillation)
# Static returns: reflectors a camera does not show as objects (manhole covers, guard-rail multipath, overhead signs,
# debris). Each is 1-4 detections spread over its width, with the static world's Doppler and an RCS as broad as the
# objects', so the radar alone tells them from a parked car or a standing pedestrian only by shape.
STATIC_RETURNS = 8.0  # mean reflectors per scan (Poisson)
STATIC_WIDTH = (0.2, 2.5)  # m, across the line of sight
STATIC_RCS = (0.0, 6.0)  # dBsm, mean and spread over reflectors
HIT_KEEP = {"car": 0.35, "pedestrian": 0.5, "cyclist": 0.45}  # chance a ray hit becomes a detection

CAMERA_HEIGHT = 1.6  # m
FOVY_DEG = 45.0  # vertical field of view; 128 px wide at 64 px high gives ±39.6° horizontally
FOCAL_PX = IMAGE_HW[0] / 2 / math.tan(math.radians(FOVY_DEG) / 2)  # 77.3 px
RADAR_HEIGHT = 0.6  # m, bumper
RADAR_FOV = math.radians(45.0)  # ±45°
RADAR_RANGE = 60.0  # m
RADAR_RAYS = 256  # azimuth steps over the field of view (0.35° apart), at each of RADAR_ELEVATIONS
RADAR_ELEVATIONS = (-0.5, 1.5)  # degrees
RANGE_NOISE, AZIMUTH_NOISE, DOPPLER_NOISE = 0.15, 0.01, 0.1  # standard deviations: m, rad, m/s
MAX_POINTS_PER_OBJECT = 6
SPAWN_RANGE = (4.0, 50.0)  # m
SPAWN_AZIMUTH = math.radians(38.0)  # objects start inside the camera's field of view
PARK = 1000.0  # x of unused bodies, beyond the far clipping plane and the radar's cutoff
EXTENT = 100.0  # the model's length scale: MuJoCo's near/far planes and fog distances are fractions of it
OBJECT_GROUP = 0  # geom group of objects (what the radar sees); the road is group 1


def _model_xml() -> str:
    bodies = []
    for cls in CLASSES:
        hx, hy, hz = HALF_SIZE[cls]
        for k in range(MAX_OBJECTS):
            if cls == "pedestrian":
                geom = f'<geom type="capsule" size="{hx} {hz - hx}" group="{OBJECT_GROUP}"/>'
            else:
                geom = f'<geom type="box" size="{hx} {hy} {hz}" group="{OBJECT_GROUP}"/>'
            bodies.append(f'<body name="{cls}{k}" mocap="true" pos="{PARK} 0 {hz}">{geom}</body>')
    lines = "".join(
        f'<geom type="box" size="40 0.08 0.001" pos="{40 + 5 * i} {y} 0.002" rgba=".8 .8 .75 1" group="1"/>'
        for i, y in enumerate((-5.25, -1.75, 1.75, 5.25))
    )
    return f"""
<mujoco>
  <statistic extent="{EXTENT}" center="0 0 0"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{IMAGE_HW[1]}" offheight="{IMAGE_HW[0]}" fovy="{FOVY_DEG}"/>
    <map znear="0.001" zfar="3" fogstart="0" fogend="0.3"/>
    <rgba fog=".62 .63 .65 1" haze=".62 .63 .65 1"/>
    <headlight ambient=".35 .35 .35" diffuse=".5 .5 .5" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1=".55 .7 .9" rgb2=".85 .9 .95" width="32" height="32"/>
  </asset>
  <worldbody>
    <light directional="true" pos="0 0 50" dir=".3 .2 -1" castshadow="false" diffuse=".6 .6 .6"/>
    <geom name="road" type="plane" size="300 300 1" rgba=".32 .33 .34 1" group="1"/>
    {lines}
    {"".join(bodies)}
    <camera name="ego" pos="0 0 {CAMERA_HEIGHT}" xyaxes="0 -1 0 0 0 1" fovy="{FOVY_DEG}"/>
  </worldbody>
</mujoco>"""


def project_to_image(x: np.ndarray, y: np.ndarray, z: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Ego-frame points (metres, x > 0 ahead) -> (u, v) pixel coordinates in the camera image (u right, v down).

    The camera is a pinhole at height ``CAMERA_HEIGHT`` looking along +x with square pixels of focal length
    ``FOCAL_PX``; a point behind the camera gets NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    ahead = np.where(x > 0.1, x, np.nan)
    u = IMAGE_HW[1] / 2 - FOCAL_PX * np.asarray(y) / ahead
    v = IMAGE_HW[0] / 2 - FOCAL_PX * (np.asarray(z) - CAMERA_HEIGHT) / ahead
    return u, v


@dataclass
class Scene:
    """One scene's arrays (see the module docstring for frames and units).

    Attributes:
        camera: (H, W, 3) uint8 image.
        radar: (P, 4) float32 detections (``RADAR_FEATURES``), zero-padded.
        radar_mask: (P,) bool, True where a detection is real.
        ego: (2,) float32 ego speed (m/s) and yaw rate (rad/s).
        obj_class: (O,) int64 class index into ``CLASSES``, -1 in padding slots.
        obj_box: (O, 5) float32 (x, y, vx, vy, yaw) per object: BEV centre, velocity over the ground, heading.
        obj_visible: (O,) float32 share of the object's probe points the camera sees (0 = fully occluded).
        condition: index into ``CONDITIONS``.
    """

    camera: np.ndarray
    radar: np.ndarray
    radar_mask: np.ndarray
    ego: np.ndarray
    obj_class: np.ndarray
    obj_box: np.ndarray
    obj_visible: np.ndarray
    condition: int


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angles to [-π, π)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


GL_OPENED = False  # whether this process has opened a GL context: a forked child of it cannot open its own


def _gl_context(width: int, height: int):  # -> mujoco's EGL or OSMesa GLContext, made current
    """An offscreen GL context: EGL first (unless ``MUJOCO_GL=osmesa``), then OSMesa."""
    global GL_OPENED
    GL_OPENED = True
    order = ("osmesa",) if os.environ.get("MUJOCO_GL", "").lower() == "osmesa" else ("egl", "osmesa")
    errors = []
    for backend in order:
        try:
            if backend == "egl":
                from mujoco.egl import GLContext
            else:
                from mujoco.osmesa import GLContext
            ctx = GLContext(width, height)
            ctx.make_current()
            return ctx
        except Exception as err:  # a missing library or a platform PyOpenGL already committed to
            errors.append(f"{backend}: {err}")
    raise RuntimeError(
        "MuJoCo could not open an offscreen GL context (" + "; ".join(errors) + "). Install EGL (`make fusion-gl`) "
        "or OSMesa (Debian: libosmesa6) and set MUJOCO_GL=osmesa."
    )


class _Offscreen:
    """MuJoCo's offscreen renderer of one fixed camera, shadows and multisampling off (set in the model)."""

    def __init__(self, model: mujoco.MjModel, camera_id: int, height: int, width: int) -> None:
        self.ctx = _gl_context(width, height)
        self.context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.context)
        self.scene = mujoco.MjvScene(model, maxgeom=256)
        self.option = mujoco.MjvOption()
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self.camera.fixedcamid = camera_id
        self.rect = mujoco.MjrRect(0, 0, width, height)
        self.pixels = np.empty((height, width, 3), dtype=np.uint8)

    def render(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """(H, W, 3) uint8, row 0 at the top."""
        self.ctx.make_current()
        mujoco.mjv_updateScene(model, data, self.option, None, self.camera, mujoco.mjtCatBit.mjCAT_ALL, self.scene)
        mujoco.mjr_render(self.rect, self.scene, self.context)
        mujoco.mjr_readPixels(self.pixels, None, self.rect, self.context)
        return self.pixels[::-1].copy()

    def close(self) -> None:
        self.context.free()
        self.ctx.free()


class SceneSimulator:
    """The MuJoCo model, its renderer and the radar's rays, built once; ``make(rng)`` draws one scene."""

    def __init__(self) -> None:
        self.model = mujoco.MjModel.from_xml_string(_model_xml())
        self.data = mujoco.MjData(self.model)
        self.camera_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, "ego")
        self.renderer = _Offscreen(self.model, self.camera_id, *IMAGE_HW)
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_FOG] = 1
        self.mocap = {
            cls: [int(self.model.body_mocapid[self.model.body(f"{cls}{k}").id]) for k in range(MAX_OBJECTS)]
            for cls in CLASSES
        }
        self.geom_of = {  # geom id -> (class, slot)
            int(self.model.body_geomadr[self.model.body(f"{cls}{k}").id]): (cls, k)
            for cls in CLASSES
            for k in range(MAX_OBJECTS)
        }
        az = np.linspace(-RADAR_FOV, RADAR_FOV, RADAR_RAYS)
        el = np.radians(np.asarray(RADAR_ELEVATIONS))
        az_grid, el_grid = np.meshgrid(az, el, indexing="ij")
        self.ray_azimuth = az_grid.ravel()  # (R,)
        self.ray_vec = np.stack(
            [np.cos(az_grid) * np.cos(el_grid), np.sin(az_grid) * np.cos(el_grid), np.sin(el_grid)], axis=-1
        ).ravel()  # (R * 3,)
        self.ray_geom = np.zeros(len(self.ray_azimuth), dtype=np.int32)
        self.ray_dist = np.zeros(len(self.ray_azimuth), dtype=np.float64)
        self.geomgroup = np.array([g == OBJECT_GROUP for g in range(6)], dtype=np.uint8)

    def close(self) -> None:
        self.renderer.close()

    # ------------------------------------------------------------------ the scene's content
    def _objects(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Classes (n,) and boxes (n, 5) of non-overlapping objects ahead; n may be 0."""
        n = int(rng.integers(0, MAX_OBJECTS + 1))
        classes, boxes = [], []
        for _ in range(n):
            for _attempt in range(10):
                c = int(rng.choice(len(CLASSES), p=CLASS_PRIOR))
                name = CLASSES[c]
                r = rng.uniform(*SPAWN_RANGE)
                a = rng.uniform(-SPAWN_AZIMUTH, SPAWN_AZIMUTH)
                x, y = r * math.cos(a), r * math.sin(a)
                radius = math.hypot(*HALF_SIZE[name][:2])
                if all(math.hypot(x - b[0], y - b[1]) > radius + b[5] + 0.3 for b in boxes):
                    break
            else:
                continue
            if name == "pedestrian" or rng.random() < 0.2:
                yaw = rng.uniform(-math.pi, math.pi)
            else:  # vehicles mostly follow the road, either way
                yaw = (0.0 if rng.random() < 0.6 else math.pi) + rng.normal(0, 0.15)
            speed = rng.uniform(0, MAX_SPEED[name]) if rng.random() < 0.8 else 0.0
            yaw = float(_wrap(np.asarray(yaw)))
            boxes.append((x, y, speed * math.cos(yaw), speed * math.sin(yaw), yaw, radius))
            classes.append(c)
        box = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)[:, :5]
        return np.asarray(classes, dtype=np.int64), box

    def _place(self, classes: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> list[int]:
        """Move the used bodies to their objects, park the others; returns each object's geom id."""
        d, m = self.data, self.model
        d.mocap_pos[:, 0] = PARK + np.arange(len(d.mocap_pos)) * 10.0
        d.mocap_pos[:, 1] = 0.0
        used = dict.fromkeys(CLASSES, 0)
        geoms = []
        for c, (x, y, _, _, yaw) in zip(classes.tolist(), boxes, strict=True):
            name = CLASSES[c]
            k = used[name]
            used[name] += 1
            mid = self.mocap[name][k]
            d.mocap_pos[mid] = (x, y, HALF_SIZE[name][2])
            d.mocap_quat[mid] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
            gid = int(m.body_geomadr[m.body(f"{name}{k}").id])
            m.geom_rgba[gid, :3] = rng.uniform(0.15, 0.95, 3)
            geoms.append(gid)
        mujoco.mj_kinematics(m, d)
        mujoco.mj_camlight(m, d)  # the camera's pose: mj_kinematics leaves cameras alone
        return geoms

    def _visibility(self, classes: np.ndarray, boxes: np.ndarray, geoms: list[int]) -> np.ndarray:
        """Share of 5 probe points on each object (centre, both sides, near the top and the bottom) whose ray from
        the camera hits that object first."""
        out = np.zeros(len(geoms), dtype=np.float32)
        cam = np.array([0.0, 0.0, CAMERA_HEIGHT])
        gid = np.zeros(1, dtype=np.int32)
        for i, (c, (x, y, *_), g) in enumerate(zip(classes.tolist(), boxes, geoms, strict=True)):
            hx, hy, hz = HALF_SIZE[CLASSES[c]]
            side = np.array([-y, x]) / max(1e-6, math.hypot(x, y)) * 0.6 * min(hx, hy)
            probes = [(x, y, hz), (x + side[0], y + side[1], hz), (x - side[0], y - side[1], hz)]
            probes += [(x, y, 1.8 * hz), (x, y, 0.3 * hz)]
            hits = 0
            for p in probes:
                mujoco.mj_ray(self.model, self.data, cam, np.asarray(p) - cam, self.geomgroup, 1, -1, gid)
                hits += int(gid[0] == g)
            out[i] = hits / len(probes)
        return out

    def _radar(
        self, classes: np.ndarray, boxes: np.ndarray, geoms: list[int], ego_speed: float, rain: bool, rng
    ) -> tuple[np.ndarray, np.ndarray]:
        """(P, 4) detections and (P,) mask: rays that hit objects (thinned, noisy), plus clutter."""
        m, d = self.model, self.data
        origin = np.array([0.0, 0.0, RADAR_HEIGHT])
        mujoco.mj_multiRay(
            m, d, origin, self.ray_vec, self.geomgroup, 1, -1, self.ray_geom, self.ray_dist, None,
            len(self.ray_azimuth), RADAR_RANGE,
        )  # fmt: skip
        points = []
        slot_of = {g: i for i, g in enumerate(geoms)}
        keep_scale = 0.7 if rain else 1.0
        for i, g in enumerate(geoms):
            if rng.random() < 0.08:  # the whole object missed (multipath, low RCS aspect)
                continue
            name = CLASSES[int(classes[i])]
            hit = np.flatnonzero((self.ray_geom == g) & (self.ray_dist > 0))
            hit = hit[rng.random(len(hit)) < HIT_KEEP[name] * keep_scale]
            if len(hit) > MAX_POINTS_PER_OBJECT:
                hit = rng.choice(hit, MAX_POINTS_PER_OBJECT, replace=False)
            vx, vy = boxes[slot_of[g], 2:4]
            rcs_object = RCS_DBSM[name] + rng.normal(0, RCS_ASPECT)
            for j in hit:
                el = math.radians(RADAR_ELEVATIONS[j % len(RADAR_ELEVATIONS)])
                rng_m = self.ray_dist[j] * math.cos(el)  # ground range
                az = self.ray_azimuth[j]
                doppler = (vx - ego_speed) * math.cos(az) + vy * math.sin(az)
                rcs = rcs_object + rng.normal(0, RCS_FLUCTUATION)
                points.append((rng_m, az, doppler, rcs))
        det = np.asarray(points, dtype=np.float64).reshape(-1, 4)
        det[:, 0] += rng.normal(0, RANGE_NOISE, len(det))
        det[:, 1] += rng.normal(0, AZIMUTH_NOISE, len(det))
        det[:, 2] += rng.normal(0, DOPPLER_NOISE, len(det))
        n_clutter = int(rng.poisson(14.0 if rain else 2.0))
        az = rng.uniform(-RADAR_FOV, RADAR_FOV, n_clutter)
        clutter = np.stack(
            [
                rng.uniform(2.0, RADAR_RANGE, n_clutter),
                az,
                -ego_speed * np.cos(az) + rng.normal(0, 0.6 if rain else 0.3, n_clutter),  # the static world
                rng.normal(-12.0, 4.0, n_clutter),
            ],
            axis=-1,
        )
        det = np.concatenate([det, clutter, self._static_returns(ego_speed, rng)])
        det = det[rng.permutation(len(det))][:MAX_RADAR_POINTS]
        radar = np.zeros((MAX_RADAR_POINTS, 4), dtype=np.float32)
        radar[: len(det)] = det
        mask = np.arange(MAX_RADAR_POINTS) < len(det)
        return radar, mask

    @staticmethod
    def _static_returns(ego_speed: float, rng: np.random.Generator) -> np.ndarray:
        """(n, 4) detections of ``STATIC_RETURNS`` reflectors: extended, static, invisible to the camera."""
        out = []
        for _ in range(int(rng.poisson(STATIC_RETURNS))):
            r = rng.uniform(3.0, RADAR_RANGE)
            half = rng.uniform(*STATIC_WIDTH) / 2 / r  # rad
            az = rng.uniform(-RADAR_FOV + half, RADAR_FOV - half)
            rcs = rng.normal(*STATIC_RCS)
            k = int(rng.integers(1, 5))
            a = az + rng.uniform(-half, half, k) + rng.normal(0, AZIMUTH_NOISE, k)
            out.append(
                np.stack(
                    [
                        r + rng.normal(0, RANGE_NOISE, k),
                        a,
                        -ego_speed * np.cos(a) + rng.normal(0, DOPPLER_NOISE, k),
                        rcs + rng.normal(0, RCS_FLUCTUATION, k),
                    ],
                    axis=-1,
                )
            )
        return np.concatenate(out) if out else np.zeros((0, 4))

    def _camera(self, condition: str, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) uint8: MuJoCo's image, with fog (MuJoCo's, nearer in thick fog) or night (dark, noisy)."""
        fog = condition == "fog"
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_FOG] = int(fog)
        self.renderer.context.fogEnd = rng.uniform(25.0, 45.0) if fog else 1e3  # metres: fully grey from here on
        img = self.renderer.render(self.model, self.data).astype(np.float32)
        if fog:
            img = 0.75 * img + 0.25 * 160.0  # the sky and everything else lose contrast too
        if condition == "night":
            img = img * rng.uniform(0.12, 0.25) + rng.normal(0, 6.0, img.shape)
        else:
            img = img + rng.normal(0, 2.0, img.shape)
        return np.clip(img, 0, 255).astype(np.uint8)

    def make(self, rng: np.random.Generator) -> Scene:
        """Draw one scene: objects, ego motion, condition; render the camera, cast the radar."""
        condition = int(rng.integers(len(CONDITIONS)))
        ego_speed = float(rng.uniform(0.0, 15.0))
        ego = np.array([ego_speed, rng.normal(0.0, 0.05)], dtype=np.float32)
        classes, boxes = self._objects(rng)
        geoms = self._place(classes, boxes, rng)
        visible = self._visibility(classes, boxes, geoms)
        radar, radar_mask = self._radar(classes, boxes, geoms, ego_speed, CONDITIONS[condition] == "rain", rng)
        camera = self._camera(CONDITIONS[condition], rng)
        n = len(classes)
        obj_class = np.full(MAX_OBJECTS, -1, dtype=np.int64)
        obj_class[:n] = classes
        obj_box = np.zeros((MAX_OBJECTS, 5), dtype=np.float32)
        obj_box[:n] = boxes
        obj_visible = np.zeros(MAX_OBJECTS, dtype=np.float32)
        obj_visible[:n] = visible
        return Scene(camera, radar, radar_mask, ego, obj_class, obj_box, obj_visible, condition)
