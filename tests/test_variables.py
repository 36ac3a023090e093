"""The variable table: which fields a longitude mirror negates."""
from exascale_climate.variables import VARIABLE_NAMES, longitude_flip_signs


def test_only_the_zonal_winds_change_sign_under_a_longitude_flip():
    signs = dict(zip(VARIABLE_NAMES, longitude_flip_signs(VARIABLE_NAMES)))
    assert {n for n, s in signs.items() if s == -1} == {"U850", "UBOT"}
    assert set(signs.values()) == {1, -1}
    assert longitude_flip_signs(["V850", "UBOT", "TMQ"]) == [1, -1, 1]
