"""uv coverage by Earth-rotation synthesis.

The formulas are those of Thompson, Moran & Swenson, *Interferometry and
Synthesis in Radio Astronomy* (3rd ed., 2017), section 4.1: a baseline in
the local east-north-up frame is first expressed in the equatorial frame
(X towards hour angle 0 on the celestial equator, Y towards hour angle -6 h,
Z towards the north celestial pole), then projected on the (u, v, w) frame
of a source at hour angle H and declination δ: u points east, v north, w
towards the source.
"""

import astropy.units as u
import numpy as np

__all__ = ["baselines", "enu_to_xyz", "xyz_to_uvw", "hour_angles", "earth_rotation_uvw"]

# The Earth turns once relative to the stars in a sidereal day, so hour angle
# advances by 2 pi per sidereal day of observing time.
SIDEREAL_DAY = 86164.0905 * u.s


def baselines(positions):
    """All antenna pairs' separations ``r_j - r_i`` for ``i < j``.

    Parameters
    ----------
    positions : `~astropy.units.Quantity`
        ``(n_antennas, 3)`` positions (east, north, up), length units.

    Returns
    -------
    enu : `~astropy.units.Quantity`
        ``(n_antennas * (n_antennas - 1) / 2, 3)`` baselines, same unit.
    """
    i, j = np.triu_indices(len(positions), 1)
    return positions[j] - positions[i]


def enu_to_xyz(enu, latitude):
    """Baselines in the local east-north-up frame to the equatorial frame.

    Parameters
    ----------
    enu : `~astropy.units.Quantity`
        ``(..., 3)`` east, north, up components.
    latitude : `~astropy.units.Quantity`
        Geodetic latitude of the array.

    Returns
    -------
    xyz : `~astropy.units.Quantity`
        ``(..., 3)`` equatorial X, Y, Z components, same unit.
    """
    east, north, up = np.moveaxis(enu, -1, 0)
    sin_lat, cos_lat = np.sin(latitude), np.cos(latitude)
    return np.stack([-sin_lat * north + cos_lat * up, east, cos_lat * north + sin_lat * up], axis=-1)


def xyz_to_uvw(xyz, hour_angle, declination):
    """Project equatorial baselines on the (u, v, w) frame of a source.

    Parameters
    ----------
    xyz : `~astropy.units.Quantity`
        ``(n_baselines, 3)`` equatorial baselines.
    hour_angle : `~astropy.units.Quantity`
        Scalar or ``(n_times,)`` hour angles of the source.
    declination : `~astropy.units.Quantity`
        Declination of the source (the phase centre).

    Returns
    -------
    uvw : `~astropy.units.Quantity`
        ``(n_times, n_baselines, 3)`` (or ``(n_baselines, 3)`` for a scalar
        hour angle), same unit as ``xyz``.
    """
    x, y, z = np.moveaxis(xyz, -1, 0)
    h = np.asarray(hour_angle.to_value(u.rad))[..., None]
    sin_h, cos_h = np.sin(h), np.cos(h)
    sin_d, cos_d = np.sin(declination), np.cos(declination)
    uu = sin_h * x + cos_h * y
    vv = -sin_d * cos_h * x + sin_d * sin_h * y + cos_d * z
    ww = cos_d * cos_h * x - cos_d * sin_h * y + sin_d * z
    return np.stack([uu, vv, ww], axis=-1)


def hour_angles(hour_angle=0 * u.hourangle, duration=20 * u.min, integration=10 * u.s):
    """Mid-points of the integrations of a track.

    Parameters
    ----------
    hour_angle : `~astropy.units.Quantity`
        Hour angle at the middle of the track (0 is transit), or a
        ``(start, end)`` pair, which then sets the duration.
    duration : `~astropy.units.Quantity`
        Observing time, used when ``hour_angle`` is a scalar.
    integration : `~astropy.units.Quantity`
        Length of one integration; the track holds ``duration /
        integration`` of them (rounded down, at least one).

    Returns
    -------
    hour_angle : `~astropy.units.Quantity`
        ``(n_times,)`` hour angles in ``hourangle``.
    """
    rate = (2 * np.pi * u.rad / SIDEREAL_DAY).to(u.hourangle / u.s)
    hour_angle = u.Quantity(hour_angle, u.hourangle)
    if hour_angle.size == 2:
        centre = hour_angle.mean()
        duration = ((hour_angle[1] - hour_angle[0]) / rate).to(u.s)
    else:
        centre = hour_angle.reshape(())
    if duration <= 0 or integration <= 0:
        raise ValueError("the track's duration and integration time must be positive")
    n = max(1, int(np.floor((duration / integration).to_value(u.one) + 1e-9)))
    # Centred on the middle hour angle, as a track "n minutes at transit" is.
    t = (np.arange(n) - (n - 1) / 2) * integration
    return (centre + rate * t).to(u.hourangle)


def earth_rotation_uvw(positions, *, latitude, declination, hour_angle):
    """Baseline coordinates (u, v, w) of every antenna pair at every hour angle.

    Parameters
    ----------
    positions : `~astropy.units.Quantity`
        ``(n_antennas, 3)`` antenna positions (east, north, up).
    latitude : `~astropy.units.Quantity`
        Latitude of the array.
    declination : `~astropy.units.Quantity`
        Declination of the phase centre.
    hour_angle : `~astropy.units.Quantity`
        ``(n_times,)`` hour angles, e.g. from `~radiorecon.simulate.hour_angles`.

    Returns
    -------
    uvw : `~astropy.units.Quantity`
        ``(n_times * n_baselines, 3)`` in metres, time-major.
    """
    xyz = enu_to_xyz(baselines(u.Quantity(positions, u.m)), latitude)
    return xyz_to_uvw(xyz, np.atleast_1d(hour_angle), declination).reshape(-1, 3)
