"""The pixel check that confirms near duplicates: copies pass, look-alikes do not."""

import numpy as np
from PIL import Image

from cnnclf.review import neighbours, pixels


def _garment(seed: int, size: int = 28) -> np.ndarray:
    """One silhouette for every seed (an ellipse on black), filled with a texture of its own:
    the look-alikes a class is made of."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    inside = ((y - size / 2) / (size * 0.45)) ** 2 + ((x - size / 2) / (size * 0.3)) ** 2 < 1
    texture = np.kron(rng.integers(0, 115, (size // 2, size // 2)), np.ones((2, 2)))
    return np.where(inside, 140 + texture, 0).astype(np.uint8)


def _files(tmp_path):
    """(paths, kinds): an original, four copies of it, two look-alikes, a flat and a broken file."""
    original = _garment(0)
    shifted = np.zeros_like(original)
    shifted[1:, :] = original[:-1, :]
    images = {
        "original.png": original,
        "resized.png": np.array(Image.fromarray(original).resize((56, 56), Image.BICUBIC)),
        "brighter.png": (original.astype(float) * 0.8 + 30).astype(np.uint8),
        "shifted.png": shifted,
        "lookalike1.png": _garment(1),
        "lookalike2.png": _garment(2),
        "flat.png": np.full((28, 28), 128, np.uint8),
    }
    paths = []
    for name, pixels_ in images.items():
        Image.fromarray(pixels_).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    Image.fromarray(original).save(tmp_path / "reencoded.jpg", quality=70)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    return paths + [str(tmp_path / "reencoded.jpg"), str(tmp_path / "broken.png")]


def test_copies_pass_and_look_alikes_do_not(tmp_path):
    paths = _files(tmp_path)
    names = [p.rsplit("/", 1)[-1] for p in paths]
    thumbs = pixels.thumbnails(paths)
    assert np.isnan(thumbs[names.index("broken.png")]).all()
    rows = np.zeros(len(paths) - 1, int)  # the original against every other file
    cols = np.arange(1, len(paths))
    copies, picture = pixels.confirmed(thumbs, rows, cols)
    found = {names[c] for c, ok in zip(cols, copies) if ok}
    assert found == {"resized.png", "brighter.png", "shifted.png", "reencoded.jpg"}
    # The look-alikes share the silhouette, so their picture correlation is high, yet not a copy.
    assert picture[names.index("lookalike1.png") - 1] > 0.5


def test_the_flat_and_the_unreadable_match_nothing(tmp_path):
    paths = _files(tmp_path)
    thumbs = pixels.thumbnails(paths + paths[-3:])
    n = len(paths)
    rows = np.array([n - 3, n - 1])  # flat.png and broken.png ...
    cols = np.array([n, n + 2])  # ... against themselves
    copies, picture = pixels.confirmed(thumbs, rows, cols)
    assert not copies.any() and (picture == 0).all()


def test_near_duplicates_confirms_the_embeddings_candidates(tmp_path):
    paths = _files(tmp_path)
    thumbs = pixels.thumbnails(paths)
    features = np.random.default_rng(0).normal(size=(len(paths), 4))
    # threshold -1: the embeddings call every pair a candidate (as a small model's do).
    pairs = neighbours.near_duplicates([features], thumbs, threshold=-1.0)
    names = [p.rsplit("/", 1)[-1] for p in paths]
    group = {"original.png", "resized.png", "brighter.png", "shifted.png", "reencoded.jpg"}
    assert {names[j] for _, j, _ in pairs} == group - {"original.png"}
    assert all(names[i] in group for i, _, _ in pairs)
    assert neighbours.near_duplicates([features], None, threshold=-1.0)  # no pixels: no check
