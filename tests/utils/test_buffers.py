"""Aligned buffers: TensorFlow adopts them without a copy, and the pool hands a buffer out again only when
nothing else holds it."""
import numpy as np
import pytest

from exascale_climate.utils.buffers import ALIGNMENT, BufferPool, aligned_copy, aligned_empty, is_aligned


@pytest.mark.parametrize("shape,dtype", [((3,), np.uint8), ((7, 5, 3), np.float32), ((1, 9), np.float16),
                                         ((2, 3), np.float64)])
def test_aligned_empty_starts_on_the_boundary(shape, dtype):
    for _ in range(5):  # different allocations, different raw offsets
        array = aligned_empty(shape, dtype)
        assert array.shape == shape and array.dtype == dtype and array.flags.c_contiguous
        assert array.ctypes.data % ALIGNMENT == 0
        array[...] = 1  # writable, and exactly the requested size


def test_aligned_copy_copies_only_when_it_must():
    aligned = aligned_empty((4, 6), np.float32)
    aligned[...] = np.arange(24).reshape(4, 6)
    assert aligned_copy(aligned) is aligned
    converted = aligned_copy(aligned, np.float64)
    assert converted.dtype == np.float64 and is_aligned(converted)
    np.testing.assert_array_equal(converted, aligned)
    shifted = np.empty(25, np.float32)[1:].reshape(4, 6)  # 4 bytes past an allocation: never 64-aligned
    shifted[...] = aligned
    copied = aligned_copy(shifted)
    assert copied is not shifted and is_aligned(copied)
    np.testing.assert_array_equal(copied, shifted)
    transposed = aligned_copy(aligned.T)
    assert transposed.flags.c_contiguous
    np.testing.assert_array_equal(transposed, aligned.T)


def test_pool_reuses_a_buffer_only_after_every_reference_is_gone():
    pool = BufferPool(limit=2)
    first = pool.empty((8, 8), np.float32)
    second = pool.empty((8, 8), np.float32)
    assert first is not second  # `first` is still held
    first_address = first.ctypes.data
    del first
    again = pool.empty((8, 8), np.float32)
    assert again.ctypes.data == first_address  # released, so handed out again
    view = again[2:4]
    del again
    other = pool.empty((8, 8), np.float32)
    assert other.ctypes.data not in (first_address, second.ctypes.data)  # a view keeps it busy
    del view
    assert pool.empty((4, 4), np.uint8).shape == (4, 4)  # shapes are pooled separately


def test_pool_keeps_at_most_limit_buffers_per_shape():
    pool = BufferPool(limit=1)
    held = [pool.empty((2, 2), np.float32) for _ in range(3)]  # all in use: 2 are beyond the limit
    addresses = {a.ctypes.data for a in held}
    assert len(addresses) == 3
    kept = held[0].ctypes.data
    del held
    assert pool.empty((2, 2), np.float32).ctypes.data == kept


def test_tensorflow_adopts_an_aligned_buffer_without_a_copy():
    """The reason for the alignment: a tensor made from an aligned array shares its memory (it sees a later
    write), one made from an unaligned array is a copy."""
    import tensorflow as tf

    seen = {}
    for name, array in (("aligned", aligned_empty((16, 16), np.float32)),
                        ("unaligned", np.empty(257, np.float32)[1:].reshape(16, 16))):
        array[...] = 3.0
        ds = tf.data.Dataset.range(1).map(
            lambda i, array=array: tf.numpy_function(lambda _: array, [i], tf.float32, stateful=False))
        tensor = next(iter(ds))
        array[...] = 7.0
        seen[name] = float(tf.reduce_max(tensor))
    assert seen == {"aligned": 7.0, "unaligned": 3.0}
