"""Synthetic clips with ground truth (train/data/clips.py): valid COCO, stable identities,
occlusion that really hides, re-entry under the same id, a camera pan."""

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from maskrt.train.data.clips import gt_paths, make_clip, write_clip
from maskrt.train.data.synthetic import CATEGORIES, MIN_VISIBLE_PIXELS

FRAMES, SIZE = 40, (160, 224)


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    files = write_clip(tmp_path_factory.mktemp("moving") / "clip.mp4", "moving", frames=FRAMES, frame_size=SIZE,
                       seed=3)
    return files, json.loads(files.gt_json.read_text())


def _per_frame(gt):
    out = {img["frame_index"]: {} for img in gt["images"]}
    frame_of = {img["id"]: img["frame_index"] for img in gt["images"]}
    for a in gt["annotations"]:
        out[frame_of[a["image_id"]]][a["track_id"]] = a
    return out


def test_files_beside_the_clip_and_valid_coco(moving):
    files, gt = moving
    assert (files.gt_json, files.gt_txt) == gt_paths(files.video)
    cap = cv2.VideoCapture(str(files.video))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == FRAMES
    coco = COCO(str(files.gt_json))  # pycocotools' own index: refuses malformed files
    assert sorted(coco.getImgIds()) == list(range(1, FRAMES + 1))
    assert [coco.imgs[i]["frame_index"] for i in range(1, FRAMES + 1)] == list(range(FRAMES))
    assert {c["id"] for c in gt["categories"]} == {cid for cid, _ in CATEGORIES}
    assert len(gt["annotations"]) == files.annotations > FRAMES
    for a in gt["annotations"]:
        m = coco.annToMask(a)
        assert a["iscrowd"] == 0 and a["track_id"] >= 1
        assert m.sum() == a["area"] > 0
        assert np.allclose(mask_utils.toBbox(a["segmentation"]), a["bbox"])


def test_mot_lines_agree_with_the_coco_file(moving):
    files, gt = moving
    rows = [line.split(",") for line in files.gt_txt.read_text().splitlines()]
    assert len(rows) == len(gt["annotations"])
    frame_of = {img["id"]: img["frame_index"] for img in gt["images"]}
    expect = sorted((frame_of[a["image_id"]] + 1, a["track_id"], *a["bbox"], a["category_id"])
                    for a in gt["annotations"])
    got = sorted((int(r[0]), int(r[1]), *map(float, r[2:6]), int(r[7])) for r in rows)
    assert got == expect
    assert all(r[6] == "1" and r[8] == "1" for r in rows)


def test_identities_are_stable_and_unique_per_frame(moving):
    _, gt = moving
    cls: dict[int, int] = {}
    for anns in _per_frame(gt).values():
        for tid, a in anns.items():
            assert cls.setdefault(tid, a["category_id"]) == a["category_id"]
    # Every object of the scene was annotated at least once, under its own id.
    assert set(cls) == set(range(1, len(cls) + 1)) and len(cls) >= 8


def test_deterministic_per_seed(tmp_path):
    a = write_clip(tmp_path / "a" / "clip.mp4", "moving", frames=6, frame_size=(96, 128), seed=5)
    b = write_clip(tmp_path / "b" / "clip.mp4", "moving", frames=6, frame_size=(96, 128), seed=5)
    c = write_clip(tmp_path / "c" / "clip.mp4", "moving", frames=6, frame_size=(96, 128), seed=6)
    assert a.gt_json.read_bytes() == b.gt_json.read_bytes() and a.gt_txt.read_bytes() == b.gt_txt.read_bytes()
    assert a.gt_txt.read_bytes() != c.gt_txt.read_bytes()
    x, y = make_clip("moving", frames=6, frame_size=(96, 128), seed=5), make_clip("moving", frames=6,
                                                                                   frame_size=(96, 128), seed=5)
    assert np.array_equal(x.render(4).image, y.render(4).image)


def test_occlusion_really_hides(moving):
    _, gt = moving
    clip = make_clip("moving", frames=FRAMES, frame_size=SIZE, seed=3)
    (hidden,), (occluder,) = clip.events["occluded"], clip.events["occluder"]
    frames = _per_frame(gt)
    present = [hidden in frames[i] for i in range(FRAMES)]
    gone = [i for i in range(FRAMES) if not present[i]]
    assert gone and present[0] and present[-1], "the occluded object must vanish and come back"
    assert gone == list(range(gone[0], gone[-1] + 1)) and len(gone) >= 2
    fully = 0
    for i in gone:
        truth = clip.render(i)
        assert hidden not in {t for t, _, _ in truth.instances}
        if not (truth.owner == hidden).any():
            fully += 1
            # Wholly hidden: the scene without the object is the same picture, pixel for pixel.
            assert np.array_equal(truth.image, clip.render(i, without=(hidden,)).image)
            # ... and not because it left the frame: the occluder is what covers it.
            assert not np.array_equal(truth.image, clip.render(i, without=(occluder,)).image)
    assert fully >= 2


def test_reentry_keeps_the_id(moving):
    _, gt = moving
    clip = make_clip("moving", frames=FRAMES, frame_size=SIZE, seed=3)
    (probe,) = clip.events["reentering"]
    track = clip.tracks[probe - 1]
    frames = _per_frame(gt)
    gone = [i for i in range(FRAMES) if probe not in frames[i]]
    assert gone and gone[0] > 0 and gone[-1] < FRAMES - 1
    h, w = SIZE
    outside = [i for i in gone if track.outline(i, clip.camera)[:, 0].min() > w]
    assert len(outside) >= 2 and outside == list(range(outside[0], outside[-1] + 1))
    for i in set(gone) - set(outside):  # the frames either side: a sliver at the edge, not ground truth
        assert 0 < (clip.render(i).owner == probe).sum() < max(MIN_VISIBLE_PIXELS, 0.15 * 8**2)
    before, after = frames[gone[0] - 1][probe], frames[gone[-1] + 1][probe]
    assert before["category_id"] == after["category_id"] == track.category_id
    # It left and came back by the right edge.
    assert before["bbox"][0] + before["bbox"][2] >= w - 1 and after["bbox"][0] + after["bbox"][2] >= w - 1


def test_crossing_objects_swap_sides(moving):
    _, gt = moving
    clip = make_clip("moving", frames=FRAMES, frame_size=SIZE, seed=3)
    a, b = clip.events["crossing"]
    frames = _per_frame(gt)
    cx = {t: [frames[i][t]["bbox"][0] + frames[i][t]["bbox"][2] / 2 for i in (0, FRAMES - 1)] for t in (a, b)}
    assert cx[a][0] < cx[b][0] and cx[a][1] > cx[b][1]


def test_pan_clip_moves_the_camera_over_a_static_world(tmp_path):
    files = write_clip(tmp_path / "clip.mp4", "pan", frames=9, frame_size=SIZE, seed=1)
    clip = make_clip("pan", frames=9, frame_size=SIZE, seed=1)
    gt = json.loads(files.gt_json.read_text())
    frames = _per_frame(gt)
    dx = clip.camera[1, 0] - clip.camera[0, 0]
    assert dx > 0 and clip.camera[8, 0] == clip.camera[0, 0] == 0  # right, then back
    moved = 0
    for tid, a in frames[0].items():
        b = frames[1].get(tid)
        if b is None or a["area"] != b["area"]:
            continue  # clipped by the edge or occlusion changed: not a whole-object shift
        assert b["bbox"][0] == pytest.approx(a["bbox"][0] - dx, abs=1)
        moved += 1
    assert moved >= 2
    assert len({tid for f in frames.values() for tid in f}) > max(len(f) for f in frames.values())


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        make_clip("zoom")
    with pytest.raises(ValueError, match="frames"):
        make_clip(frames=0)


def test_cli_writes_a_clip_and_refuses_bad_input(tmp_path, capsys):
    from maskrt.runtime.cli import main

    out = tmp_path / "c.mp4"
    assert main(["data", "clip", "--out", str(out), "--frames", "3", "--frame-size", "64", "96", "--no-progress"]) == 0
    assert "3 frames" in capsys.readouterr().out
    assert all(p.is_file() for p in (out, *gt_paths(out)))
    assert main(["data", "clip", "--out", str(tmp_path / "c.avi")]) == 2
    assert main(["data", "clip", "--out", str(out), "--frames", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["maskrt data clip: error: --out must name an .mp4 file, got " + repr(str(tmp_path / "c.avi")),
                   "maskrt data clip: error: frames must be at least 1, got 0"]


def test_contact_sheet_lays_out_frames_beside_their_ground_truth(tmp_path):
    from maskrt.export.gallery import contact_sheet, draw_ground_truth
    from maskrt.runtime.video.overlay import class_colour

    files = write_clip(tmp_path / "clip.mp4", "moving", frames=5, frame_size=(64, 96), seed=2)
    gt = json.loads(files.gt_json.read_text())
    names = ("__background__", *(name for _, name in CATEGORIES))
    sheet = cv2.imread(str(contact_sheet(files.video, files.video, gt, names, tmp_path / "g.png", n=3)))
    # 3 frames, 2 pairs per row: 2 rows of (caption + frame), each pair = frame | 4 px | frame.
    assert sheet.shape == (2 * (22 + 64) + 8, 2 * (2 * 96 + 4) + 12, 3)
    # The ground truth is drawn where it is: on black, a mask's inside is alpha * its class colour.
    ann = max(gt["annotations"], key=lambda a: a["area"])
    label = names.index(dict(CATEGORIES)[ann["category_id"]])
    drawn = draw_ground_truth(np.zeros((64, 96, 3), np.uint8), [ann], {ann["category_id"]: label}, names)
    inside = cv2.erode(mask_utils.decode({**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()}),
                       np.ones((5, 5), np.uint8)).astype(bool)
    x, y, w, h = (int(v) for v in ann["bbox"])
    inside[max(0, y - 14):y + 14, max(0, x - 2):] = False  # away from the label box
    assert inside.any()
    expect = np.floor(np.array(class_colour(label), np.float32) * 0.5 + 0.5).astype(np.uint8)
    assert (drawn[inside] == expect).all()
    full = mask_utils.decode({**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()})
    outside = ~cv2.dilate(full, np.ones((5, 5), np.uint8)).astype(bool)
    outside[: y + 20] = False  # the label sits above or just inside the box top
    assert outside.any() and (drawn[outside] == 0).all()
