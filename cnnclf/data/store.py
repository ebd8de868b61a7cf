"""Where decoded, resized images live between epochs: a store filled on first read.

Why not `tf.data.Dataset.cache`: its disk cache keeps an in-memory index entry per element
until the epoch ends (peak memory grows with the data set), and any cache of images forces
the per-epoch shuffle to buffer *images* after it, not indices. Here every image has a fixed
slot (same shape, uint8), so the pipeline shuffles indices and reads slots: memory stays flat
as the data set grows, and the disk variant is plain `pread`/`pwrite` on one file (page cache,
not process memory).
"""

from __future__ import annotations

import errno
import os

import numpy as np

from cnnclf.data.decode import ImageSpec, load_image
from cnnclf.errors import CnnclfError, ImageError

UNKNOWN, DECODED, UNREADABLE = 0, 1, 2


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised array on a 64-byte boundary, for arrays handed to TensorFlow from
    `tf.numpy_function`: TensorFlow takes an aligned one as the op's output as it is, and
    copies an unaligned one (NumPy's large arrays sit 16 bytes past a page boundary): a
    second pass over every pixel, which slowed augmented batches markedly."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + nbytes].view(dtype).reshape(shape)


class DecodedStore:
    """Images of `paths` by index, decoded with `decode.load_image` the first time they are read.

    `where` is "memory" (one uint8 array, filled lazily: pages are only committed as images
    arrive), "disk" (a file at `path`, created here; the caller owns its folder) or "none"
    (decode on every read). Reads may come from several threads at once (tf.data's parallel
    map): a slot is marked decoded only after it is complete, and two threads decoding the
    same image write the same bytes.
    """

    def __init__(
        self,
        paths: list[str],
        spec: ImageSpec,
        where: str,
        path: str | None = None,
        on_unreadable=None,
    ):
        self.paths = list(paths)
        self.spec = spec
        self.where = where
        self.path = path
        self.shape = spec.shape
        self.slot_bytes = int(np.prod(self.shape))
        self.state = np.zeros(len(self.paths), np.uint8)
        self.on_unreadable = on_unreadable or (lambda path, reason: None)
        self.empty = np.zeros(self.shape, np.uint8)
        self.array: np.ndarray | None = None
        self.fd: int | None = None
        self._mapped: np.memmap | None = None
        if where == "memory":
            # Aligned: the pipeline reads it as a TensorFlow tensor in place, and TensorFlow's
            # DLPack import aborts the process on an unaligned buffer.
            self.array = aligned_empty((len(self.paths), *self.shape), np.uint8)
        elif where == "disk":
            if path is None:
                raise ValueError("a disk store needs a file path")
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            # Full length up front (sparse: no disk used until written), so the file can be
            # mapped whole for batch reads even when the last images are unreadable.
            os.ftruncate(self.fd, len(self.paths) * self.slot_bytes)
        elif where != "none":
            raise ValueError(f"unknown store {where!r}")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def filled(self) -> bool:
        """True once every image is decoded or known unreadable, in a memory or disk store:
        from then on `read_batch` can serve any readable index."""
        return self.where != "none" and not (self.state == UNKNOWN).any()

    def read_batch(self, indices) -> np.ndarray:
        """Images at `indices` (all decoded), as one uint8 array [len(indices), H, W, C].

        One NumPy gather per batch: it copies with the GIL released, so parallel calls scale
        with cores, where one Python call per image did not (see pipeline.py). `mode="clip"`
        because NumPy's default ("raise") gathers into a hidden buffer first and then copies
        it into `out`: every pixel twice. The pipeline only asks for indices it holds; others
        raise here, as NumPy's default did.
        """
        indices = np.asarray(indices, np.intp)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self.paths)):
            raise IndexError(
                f"store indices must be in [0, {len(self.paths)}); got "
                f"{indices.min()}..{indices.max()}"
            )
        return np.take(
            self._slots(),
            indices,
            axis=0,
            mode="clip",
            out=aligned_empty((len(indices), *self.shape), np.uint8),
        )

    def _slots(self) -> np.ndarray:
        if self.array is not None:
            return self.array
        if self._mapped is None and not len(self.paths):
            return np.empty((0, *self.shape), np.uint8)  # an empty file cannot be mapped
        if self._mapped is None:
            assert self.path is not None  # a disk store: batches are not read from "none"
            # A read-only map of the store's file: slots are read through the page cache,
            # as pread did, without a copy in process memory.
            self._mapped = np.memmap(self.path, np.uint8, "r", shape=(len(self.paths), *self.shape))
        return self._mapped

    def read(self, index: int) -> tuple[np.ndarray, bool]:
        """(image, True), or (zeros, False) when the file cannot be decoded."""
        state = self.state[index]
        if state == DECODED:
            if self.array is not None:
                return self.array[index], True
            assert self.fd is not None  # only memory and disk stores mark images decoded
            data = os.pread(self.fd, self.slot_bytes, index * self.slot_bytes)
            return np.frombuffer(data, np.uint8).reshape(self.shape), True
        if state == UNREADABLE:
            return self.empty, False
        try:
            image = load_image(self.paths[index], self.spec)
        except ImageError as exc:
            self.on_unreadable(self.paths[index], exc.reason)
            self.state[index] = UNREADABLE
            return self.empty, False
        if self.array is not None:
            self.array[index] = image
        elif self.fd is not None:
            try:
                if (
                    os.pwrite(
                        self.fd, np.ascontiguousarray(image).tobytes(), index * self.slot_bytes
                    )
                    != self.slot_bytes
                ):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a short write
            except OSError as exc:
                raise CnnclfError(
                    f"data.cache: disk: cannot write decoded images to "
                    f"{self.path} ({exc.strerror}); free space in that folder "
                    "(set TMPDIR to a bigger one) or set data.cache: memory or "
                    "none"
                ) from exc
        else:
            return image, True  # "none": nothing kept
        self.state[index] = DECODED  # only after the slot is complete
        return image, True
