"""Imaging weights, PSF, dirty images and thermal noise for one uv coverage.

Images are gridded with ``ducc0.wgridder`` without the w-term: over the
51" x 51" fields simulated here the w phase ``2 pi w (sqrt(1 - l² - m²) - 1)``
stays below 0.04 rad at the corners for ALMA's longest C43-3 baselines, and
the primary beam weights the corners down further.

Orientation: images are ``(ny, nx)`` arrays with north up (+y, row index)
and east to the left (x, column index, increases to the west), as FITS images
with negative ``CDELT1``; the phase centre is pixel ``(npix // 2, npix // 2)``.
Visibilities follow the usual convention
``V(u, v) = sum I(l, m) exp(-2 pi i (u l + v m))`` with l east and m north.

Two ways give the same dirty image (`~radiorecon.simulate.UVCoverage.dirty`):

``"visibility"``
    predicts the visibilities of the sky (``dirty2vis``), adds noise to
    them, and grids them back (``vis2dirty``).
``"image"`` (the fast path, the default)
    convolves the sky with the PSF computed on a grid twice the image size,
    which makes the FFT convolution exactly the linear one, and adds the
    noise in the same Fourier transform: each visibility's noise is put in
    the nearest cell of that 2x grid ("gridded noise"). The sky part agrees
    with the visibility path to the gridder's accuracy; the noise has the
    same variance and, up to lags of a good fraction of the image, the same
    correlation (its uv positions move by at most half a cell of
    ``1 / (2 * field of view)``). The tests check both.

Deconvolved surveys (LoTSS, say) publish restored images instead: the sky
convolved with a Gaussian restoring beam, plus noise that the same beam
correlates. `RestoredImaging` makes those, with the interface of
`UVCoverage`, so that a preset with ``imaging="restored"`` flows through the
same engine, data sets and benchmark (its "PSF" is the restoring beam).
"""

import functools

import astropy.units as u
import numpy as np
import scipy.fft
from astropy.constants import c

__all__ = ["imaging_weights", "visibility_noise", "UVCoverage", "RestoredImaging"]

# Relative accuracy of the gridder; far below the noise of any simulated image.
EPSILON = 1e-5
_C = c.to_value(u.m / u.s)


def _uv_cells(uv, cell):
    """Integer cell indices of ``uv`` points, folded onto v >= 0.

    Hermitian symmetry makes (u, v) and (-u, -v) the same measurement, so
    both must land in the same cell when visibilities are counted.
    """
    iu, iv = np.rint(uv[0] / cell).astype(np.int64), np.rint(uv[1] / cell).astype(np.int64)
    flip = (iv < 0) | ((iv == 0) & (iu < 0))
    return np.where(flip, -iu, iu), np.where(flip, -iv, iv)


def imaging_weights(uvw, freq, npix, pixel_scale, weighting="natural", robust=0.5):
    """Imaging weights of each visibility for natural, uniform or Briggs weighting.

    ducc0 has no weighting scheme of its own, so the visibilities are
    counted here on the uv grid of the image (cells ``1 / (npix * pixel)``
    wide, the conjugate points included): uniform weighting divides by the
    count of the cell, Briggs weighting by ``1 + f² count`` with
    ``f² = (5 * 10**-robust)² / (sum_k count_k / n)`` (Briggs 1995, as in
    CASA). All visibilities are assumed to have the same thermal noise, so
    the natural weights are 1.

    Parameters
    ----------
    uvw : `~numpy.ndarray`
        ``(n_rows, 3)`` baseline coordinates in metres.
    freq : `~numpy.ndarray`
        ``(n_channels,)`` channel frequencies in Hz.
    npix : int
        Image size in pixels.
    pixel_scale : float
        Pixel size in radians.
    weighting : {"natural", "uniform", "briggs"}
    robust : float
        Briggs robustness, -2 (close to uniform) to 2 (close to natural).

    Returns
    -------
    weights : `~numpy.ndarray`
        ``(n_rows, n_channels)`` float64.
    """
    shape = (len(uvw), len(freq))
    if weighting == "natural":
        return np.ones(shape)
    uv = uvw[:, :2].T[:, :, None] * (freq / _C)  # (2, n_rows, n_channels) wavelengths
    iu, iv = _uv_cells(uv.reshape(2, -1), 1.0 / (npix * pixel_scale))
    # v >= 0 after folding; u spans about -npix/2 .. npix/2.
    flat = iv * (2 * npix + 1) + (iu + npix)
    counts = np.bincount(flat)[flat].astype(float)
    if weighting == "uniform":
        return (1.0 / counts).reshape(shape)
    if weighting == "briggs":
        f2 = (5.0 * 10.0 ** (-robust)) ** 2 / (counts.sum() / counts.size)
        return (1.0 / (1.0 + counts * f2)).reshape(shape)
    raise ValueError(f"weighting must be 'natural', 'uniform' or 'briggs', not {weighting!r}")


def visibility_noise(sefd, channel_width, integration, efficiency=0.88, n_pol=2):
    """Thermal noise of one Stokes I visibility from the radiometer equation.

    ``sigma = SEFD / (efficiency * sqrt(2 * n_pol * channel_width * integration))``
    is the rms of the real part (and of the imaginary part) of a Stokes I
    visibility averaged over ``n_pol`` polarisations (Thompson, Moran &
    Swenson 2017, ch. 6; Wrobel & Walker 1999). With natural weighting of
    ``M`` visibilities the image rms is ``sigma / sqrt(M)``; in general it
    follows from the weights (`~radiorecon.simulate.UVCoverage.noise_gain`).

    Parameters
    ----------
    sefd : `~astropy.units.Quantity`
        System equivalent flux density of one antenna.
    channel_width : `~astropy.units.Quantity`
        Bandwidth of one channel.
    integration : `~astropy.units.Quantity`
        Integration time of one visibility.
    efficiency : float
        Correlator (quantisation) efficiency.
    n_pol : int
        Polarisations combined into Stokes I.

    Returns
    -------
    sigma : `~astropy.units.Quantity`
        In Jy.
    """
    return (sefd / (efficiency * np.sqrt(2 * n_pol * channel_width * integration))).to(u.Jy)


class UVCoverage:
    """The sampling of one observation and what follows from it alone.

    Everything here is computed once and cached: the PSF (peak 1, on a grid
    twice the image size), its fitted clean beam, the transfer function of
    the fast path and the layout of its gridded noise.

    Parameters
    ----------
    uvw : `~numpy.ndarray`
        ``(n_rows, 3)`` baseline coordinates in metres.
    freq : `~numpy.ndarray`
        ``(n_channels,)`` channel frequencies in Hz.
    npix : int
        Image size (even, at least 32).
    pixel_scale : `~astropy.units.Quantity`
        Pixel size.
    weighting : {"natural", "uniform", "briggs"}
        Imaging weights (see `~radiorecon.simulate.imaging_weights`).
    robust : float
        Briggs robustness.
    psf2 : `~numpy.ndarray`, optional
        The PSF of this coverage on the ``2 npix`` grid, if already known.
    beam : `radio_beam.Beam`, optional
        Its fitted clean beam, if already known.

    Raises
    ------
    ValueError
        If the pixels are too coarse for the longest baseline (the image
        would not sample the PSF).
    """

    def __init__(self, uvw, freq, npix, pixel_scale, weighting="natural", robust=0.5, *,
                 psf2=None, beam=None):
        self.uvw = np.ascontiguousarray(uvw, dtype=np.float64)
        self.freq = np.atleast_1d(np.asarray(freq, dtype=np.float64))
        self.npix, self.pixel_scale = int(npix), pixel_scale
        self._pixel = pixel_scale.to_value(u.rad)
        longest = np.abs(self.uvw[:, :2]).max() * self.freq.max() / _C
        if longest * self._pixel >= 0.5:
            raise ValueError(
                f"pixel_scale {pixel_scale} is too coarse for the longest baseline "
                f"({longest:.4g} wavelengths): it must be below {(0.5 / longest * u.rad).to(u.arcsec):.4g}"
            )
        self.weights = imaging_weights(self.uvw, self.freq, npix, self._pixel, weighting, robust)
        self._sum_w = self.weights.sum()
        # ducc0's first image axis is our row (north, v); its second is our
        # column, which runs west, i.e. along -u.
        self._uvw_ducc = np.ascontiguousarray(self.uvw[:, [1, 0, 2]] * [1.0, -1.0, 1.0])
        # Known results for this very coverage (e.g. read back from a data
        # set) spare the gridding and the fit.
        if psf2 is not None:
            self.psf2 = np.asarray(psf2, np.float32)
        if beam is not None:
            self.beam = beam

    @functools.cached_property
    def noise_gain(self):
        """Image rms per unit visibility noise: ``sqrt(sum w²) / sum w``."""
        return float(np.sqrt((self.weights**2).sum()) / self._sum_w)

    def _grid(self, vis, npix, weights):
        return _ducc().vis2dirty(
            uvw=self._uvw_ducc, freq=self.freq, vis=vis, wgt=weights, npix_x=npix, npix_y=npix,
            pixsize_x=self._pixel, pixsize_y=self._pixel, epsilon=EPSILON,
        ) / self._sum_w

    @functools.cached_property
    def psf2(self):
        """PSF on a ``2 npix`` grid, peak 1 at ``(npix, npix)``; float32."""
        ones = np.ones(self.weights.shape, np.complex128)
        psf = self._grid(ones, 2 * self.npix, self.weights)
        return (psf / psf[self.npix, self.npix]).astype(np.float32)

    def psf(self, size=None):
        """PSF of ``size`` pixels (default ``npix``), peak 1 at ``size // 2``."""
        size = self.npix if size is None else size
        lo = self.npix - size // 2
        return self.psf2[lo : lo + size, lo : lo + size]

    @functools.cached_property
    def beam(self):
        """The clean beam fitted to the PSF (`radiorecon.beam.fit_clean_beam`)."""
        from ..beam import fit_clean_beam  # astropy.modeling: imported only when needed

        return fit_clean_beam(self.psf(), self.pixel_scale)

    def predict(self, sky):
        """Visibilities ``(n_rows, n_channels)`` complex128 of an image in Jy/pixel."""
        return _ducc().dirty2vis(
            uvw=self._uvw_ducc, freq=self.freq, dirty=np.asarray(sky, np.float64),
            pixsize_x=self._pixel, pixsize_y=self._pixel, epsilon=EPSILON,
        )

    def visibilities(self, sky, noise_sigma=0.0, rng=None):
        """Visibilities (Jy) of a sky in Jy/pixel, with noise.

        The noise is Gaussian, of rms ``noise_sigma`` in the real and in the
        imaginary part of each visibility.
        """
        vis = self.predict(sky)
        if noise_sigma > 0:
            vis += noise_sigma * (rng.standard_normal(vis.shape) + 1j * rng.standard_normal(vis.shape))
        return vis

    def image(self, vis):
        """Dirty image (Jy/beam, float32) of visibilities in Jy, with the imaging weights."""
        return self._grid(np.asarray(vis, np.complex128), self.npix, self.weights).astype(np.float32)

    @functools.cached_property
    def _transfer(self):
        # ifftshift puts lag 0 at index 0: the circular convolution on the
        # 2N grid then equals the linear one on the N x N image.
        return scipy.fft.rfft2(np.fft.ifftshift(self.psf2)).astype(np.complex64)

    @functools.cached_property
    def _noise_cells(self):
        """Flat indices in the 2N x (N + 1) half plane and std per unit visibility noise."""
        n2 = 2 * self.npix
        uv = self.uvw[:, :2].T[:, :, None] * (self.freq / _C) * (n2 * self._pixel)
        # irfft2 exponent: +2 pi i (kr r + kc c) / 2N; ours: +2 pi i (v m - u x).
        kc, kr = np.rint(-uv[0]).ravel().astype(np.int64), np.rint(uv[1]).ravel().astype(np.int64)
        flip = kc < 0  # the conjugate point: its noise has the same law
        kc, kr = np.where(flip, -kc, kc), np.where(flip, -kr, kr) % n2
        flat = kr * (self.npix + 1) + kc
        var = np.bincount(flat, self.weights.ravel() ** 2, minlength=n2 * (self.npix + 1))
        cells = np.flatnonzero(var)
        # irfft2 counts a cell of columns 1..N-1 twice (with its conjugate),
        # one of column 0 or N once, and divides by (2N)².
        col = cells % (self.npix + 1)
        once = (col == 0) | (col == self.npix)
        scale = n2**2 / (2 * self._sum_w) * np.where(once, 2.0, 1.0)
        return cells, (np.sqrt(var[cells]) * scale).astype(np.float32)

    def dirty(self, sky, noise_sigma=0.0, rng=None, method="image"):
        """Dirty image in Jy/beam of a sky in Jy/pixel, with thermal noise.

        Parameters
        ----------
        sky : `~numpy.ndarray`
            ``(npix, npix)`` apparent sky (primary beam applied), Jy/pixel.
        noise_sigma : float
            Noise of each visibility (real and imaginary part), Jy.
        rng : `numpy.random.Generator`
            Needed when ``noise_sigma > 0``.
        method : {"image", "visibility"}
            The fast path or the visibility path (see the module docs).

        Returns
        -------
        dirty : `~numpy.ndarray`
            ``(npix, npix)`` float32.
        """
        if method == "visibility":
            return self.image(self.visibilities(sky, noise_sigma, rng))
        if method != "image":
            raise ValueError(f"method must be 'image' or 'visibility', not {method!r}")
        n, n2 = self.npix, 2 * self.npix
        sky = np.asarray(sky, np.float32)
        # rfft2 of the zero-padded sky, one axis at a time so that the rows
        # that are zero (the padding and most of a sparse sky) cost nothing.
        spectrum = np.zeros((n2, n + 1), np.complex64)
        rows = np.flatnonzero(sky.any(axis=1))
        if len(rows):
            r0, r1 = rows[0], rows[-1] + 1
            spectrum[r0:r1] = scipy.fft.rfft(sky[r0:r1], n=n2, axis=1)
            spectrum = scipy.fft.fft(spectrum, axis=0, overwrite_x=True)
            spectrum *= self._transfer
        if noise_sigma > 0:
            cells, std = self._noise_cells
            z = rng.standard_normal((2, len(cells)), dtype=np.float32)
            spectrum.ravel()[cells] += (noise_sigma * std) * (z[0] + 1j * z[1])
        # Only the first n rows of the 2n x 2n result are the image.
        half = scipy.fft.ifft(spectrum, axis=0, overwrite_x=True)[:n]
        return scipy.fft.irfft(half, n=n2, axis=1)[:, :n].copy()


class RestoredImaging:
    """Restored images: the sky convolved with a circular Gaussian beam, plus beam-correlated noise.

    The image of a sky in Jy/pixel is in Jy/beam: the convolution with the
    beam of peak 1 (a point source of ``S`` Jy peaks at ``S`` Jy/beam). The
    noise is white noise convolved with the same beam and scaled to the
    requested rms, so its correlation is the beam's autocorrelation, as in a
    deconvolved image whose residuals are noise-dominated.

    Parameters
    ----------
    fwhm : `~astropy.units.Quantity`
        FWHM of the restoring beam.
    npix : int
        Image size (even).
    pixel_scale : `~astropy.units.Quantity`
        Pixel size.

    Raises
    ------
    ValueError
        If the beam is narrower than two pixels (the image would not sample it).
    """

    #: Image rms per unit noise: the noise is given as the image rms.
    noise_gain = 1.0
    uvw = weights = None

    def __init__(self, fwhm, npix, pixel_scale):
        from radio_beam import Beam

        self.npix, self.pixel_scale = int(npix), pixel_scale
        width = float((fwhm / pixel_scale).decompose())
        if width < 2:
            raise ValueError(
                f"restoring_beam {fwhm} is under two pixels of {pixel_scale}: the image would not sample it"
            )
        self.beam = Beam(major=fwhm, minor=fwhm, pa=0 * u.deg)
        r = np.arange(-self.npix, self.npix)
        sigma = width / np.sqrt(8 * np.log(2))
        g = np.exp(-0.5 * (r / sigma) ** 2)
        self.psf2 = np.outer(g, g).astype(np.float32)  # peak 1 at (npix, npix)
        # The noise is convolved with the beam normalised to unit sum of squares.
        self._noise_scale = float(1.0 / np.sqrt((self.psf2.astype(np.float64) ** 2).sum()))

    def psf(self, size=None):
        """The beam on ``size`` pixels (default ``npix``), peak 1 at ``size // 2``."""
        return UVCoverage.psf(self, size)

    def visibilities(self, sky, noise_sigma=0.0, rng=None):
        raise ValueError("a restored image has no visibilities: use method='image' with imaging='restored'")

    @functools.cached_property
    def _transfer(self):
        return scipy.fft.rfft2(np.fft.ifftshift(self.psf2)).astype(np.complex64)

    def dirty(self, sky, noise_sigma=0.0, rng=None, method="image"):
        """Restored image in Jy/beam of a sky in Jy/pixel, with noise of rms ``noise_sigma`` (Jy/beam).

        Parameters
        ----------
        sky : `~numpy.ndarray`
            ``(npix, npix)`` sky (primary beam applied), Jy/pixel.
        noise_sigma : float
            Rms of the image noise, Jy/beam.
        rng : `numpy.random.Generator`
            Needed when ``noise_sigma > 0``.
        method : {"image"}
            Restored images are made in the image plane only.

        Returns
        -------
        image : `~numpy.ndarray`
            ``(npix, npix)`` float32.
        """
        if method != "image":
            self.visibilities(sky)
        n, n2 = self.npix, 2 * self.npix
        # On the 2N grid the circular convolution of the zero-padded sky is
        # the linear one, and that of the white noise a stationary field.
        field = np.zeros((n2, n2), np.float32)
        field[:n, :n] = sky
        if noise_sigma > 0:
            field += (noise_sigma * self._noise_scale) * rng.standard_normal((n2, n2), dtype=np.float32)
        spectrum = scipy.fft.rfft2(field) * self._transfer
        return scipy.fft.irfft2(spectrum, s=(n2, n2))[:n, :n].astype(np.float32)


def _ducc():
    import ducc0.wgridder.experimental as wgridder

    return wgridder
