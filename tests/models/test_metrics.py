"""Metrics against hand-computed values on tiny arrays, edge cases and input validation."""

import math

import numpy as np
import pytest
import torch

from hyplex.models.metrics import (
    confusion_matrix,
    iou_per_class,
    mean_iou,
    mrae,
    mrae_loss,
    psnr,
    real_fake_accuracy,
    sam,
    sam_loss,
    ssim,
)

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------ PSNR


def test_psnr_of_constant_error_matches_hand_value():
    target = np.zeros((4, 5, 3))
    pred = target + 0.1  # MSE = 0.01 -> PSNR = 10 log10(1 / 0.01) = 20 dB
    assert psnr(pred, target) == pytest.approx(20.0)
    assert psnr(pred * 2, target * 2, data_range=2.0) == pytest.approx(20.0)


def test_psnr_perfect_prediction_is_inf():
    cube = np.random.default_rng(0).random((4, 4, 3))
    assert psnr(cube, cube) == math.inf


def test_psnr_torch_channel_first_equals_numpy_channel_last():
    cube = np.random.default_rng(1).random((2, 6, 7, 5))  # (N, H, W, L)
    noisy = cube + np.random.default_rng(2).normal(0, 0.05, cube.shape)
    as_torch = [torch.from_numpy(a).permute(0, 3, 1, 2) for a in (noisy, cube)]  # (B, L, H, W)
    assert psnr(*as_torch, crop_border=1) == pytest.approx(psnr(noisy, cube, crop_border=1))


def test_crop_border_removes_border_pixels():
    target = np.zeros((6, 6, 2))
    pred = np.zeros((6, 6, 2))
    pred[0, :, :] = 1.0  # error only on the top row
    assert psnr(pred, target, crop_border=1) == math.inf
    assert psnr(pred, target) == pytest.approx(10 * math.log10(6.0))  # MSE = 1/6
    with pytest.raises(ValueError, match="crop_border"):
        psnr(pred, target, crop_border=3)
    with pytest.raises(ValueError, match="crop_border"):
        psnr(pred, target, crop_border=-1)


def test_shape_mismatch_is_rejected():
    for metric in (psnr, ssim, sam, mrae):
        with pytest.raises(ValueError, match="same shape"):
            metric(np.zeros((12, 12, 3)), np.zeros((12, 12, 4)))
    with pytest.raises(ValueError, match="numpy array or a torch tensor"):
        psnr([1.0], [1.0])


# ------------------------------------------------------------------------------------ SSIM


def _ssim_brute_force(x, y, data_range=1.0):
    """Direct Wang et al. (2004) eq. (13) with an explicit 11x11 Gaussian window (valid)."""
    offsets = np.arange(-5, 6)
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for band in range(x.shape[-1]):
        for i in range(5, x.shape[0] - 5):
            for j in range(5, x.shape[1] - 5):
                px, py = (
                    x[i - 5 : i + 6, j - 5 : j + 6, band],
                    y[i - 5 : i + 6, j - 5 : j + 6, band],
                )
                mx, my = (window * px).sum(), (window * py).sum()
                vx, vy = (window * (px - mx) ** 2).sum(), (window * (py - my) ** 2).sum()
                cov = (window * (px - mx) * (py - my)).sum()
                values.append(
                    ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
                )
    return float(np.mean(values))


def test_ssim_matches_direct_windowed_formula():
    rng = np.random.default_rng(3)
    target = rng.random((14, 13, 2))
    pred = np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1)
    assert ssim(pred, target) == pytest.approx(_ssim_brute_force(pred, target), rel=1e-10)


def test_ssim_of_constant_images_is_luminance_term():
    # Flat images: variances and covariance vanish, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.5, 0.3, 0.01**2
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)
    assert ssim(np.full((11, 11, 1), a), np.full((11, 11, 1), b)) == pytest.approx(expected)


def test_ssim_perfect_and_too_small():
    cube = np.random.default_rng(4).random((12, 12, 3))
    assert ssim(cube, cube) == pytest.approx(1.0)
    assert ssim(torch.from_numpy(cube).permute(2, 0, 1), torch.from_numpy(cube).permute(2, 0, 1)) \
        == pytest.approx(1.0)  # fmt: skip
    with pytest.raises(ValueError, match="H, W >= 11"):
        ssim(np.zeros((10, 12, 3)), np.zeros((10, 12, 3)))


# ------------------------------------------------------------------------------------- SAM


def test_sam_orthogonal_parallel_and_opposite():
    pred = np.array([[[1.0, 0.0], [2.0, 2.0], [1.0, 0.0]]])  # (1, 3, 2): three pixels
    target = np.array([[[0.0, 3.0], [1.0, 1.0], [-1.0, 0.0]]])
    # angles 90, 0 and 180 deg -> mean 90
    assert sam(pred, target) == pytest.approx(90.0)
    assert sam(pred[:, :1], target[:, :1]) == pytest.approx(90.0)
    assert sam(pred[:, 1:2], target[:, 1:2]) == pytest.approx(0.0, abs=1e-6)
    # 45 degrees
    assert sam(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]])) == pytest.approx(45.0)


def test_sam_zero_spectrum_guard():
    zero, one = np.zeros((1, 1, 3)), np.ones((1, 1, 3))
    assert sam(zero, zero) == 0.0  # both black: agree
    assert sam(zero, one) == pytest.approx(90.0)  # only one black: no direction
    assert np.isfinite(sam(zero, one))


def test_sam_is_scale_invariant_and_perfect_is_zero():
    cube = np.random.default_rng(5).random((3, 4, 6)) + 0.1
    assert sam(cube, cube) == pytest.approx(0.0, abs=1e-5)
    assert sam(3.0 * cube, cube) == pytest.approx(0.0, abs=1e-5)


# ------------------------------------------------------------------------------------ MRAE


def test_mrae_hand_value_and_guard():
    target = np.array([[[1.0, 2.0]]])
    pred = np.array([[[1.5, 1.0]]])  # |0.5| / 1 = 0.5 and |1| / 2 = 0.5
    assert mrae(pred, target) == pytest.approx(0.5)
    assert mrae(target, target) == 0.0
    # target 0: denominator is eps -> |0.002 - 0| / 1e-3 = 2
    assert mrae(np.array([[[0.002]]]), np.array([[[0.0]]])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="eps"):
        mrae(target, target, eps=0.0)


# ---------------------------------------------------------------------------------- losses


def test_losses_match_metrics_and_are_differentiable():
    torch.manual_seed(0)
    target = torch.rand(2, 5, 4, 3) + 0.1
    pred = (target + 0.05 * torch.randn_like(target)).requires_grad_()
    loss = mrae_loss(pred, target, eps=1e-3)
    assert loss.item() == pytest.approx(mrae(pred, target), rel=1e-6)
    angle = sam_loss(pred, target)
    assert math.degrees(angle.item()) == pytest.approx(sam(pred, target), rel=1e-4)
    (loss + angle).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_sam_loss_gradient_finite_at_perfect_match():
    target = torch.rand(1, 4, 2, 2) + 0.1
    pred = target.clone().requires_grad_()
    sam_loss(pred, target).backward()
    assert torch.isfinite(pred.grad).all()
    with pytest.raises(ValueError, match="same shape"):
        sam_loss(pred, target[:, :3])
    with pytest.raises(ValueError, match="torch tensors"):
        mrae_loss(np.zeros(3), np.zeros(3), 1e-3)


# ------------------------------------------------------------------------ label metrics


TRUE_2x3 = np.array([[0, 0, 1], [1, 2, 2]])
PRED_2x3 = np.array([[0, 1, 1], [1, 2, 0]])


def test_confusion_matrix_by_hand():
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])  # rows true, columns predicted
    np.testing.assert_array_equal(confusion_matrix(PRED_2x3, TRUE_2x3, 3), expected)
    np.testing.assert_array_equal(
        confusion_matrix(torch.from_numpy(PRED_2x3), torch.from_numpy(TRUE_2x3), 3), expected
    )


def test_iou_by_hand_on_2x3_map():
    # class 0: TP 1, FP 1 (true 2 -> 0), FN 1 (true 0 -> 1): 1/3
    # class 1: TP 2, FP 1, FN 0: 2/3;  class 2: TP 1, FP 0, FN 1: 1/2
    np.testing.assert_allclose(iou_per_class(PRED_2x3, TRUE_2x3, 3), [1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(PRED_2x3, TRUE_2x3, 3) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_iou_absent_class_is_nan_and_skipped():
    iou = iou_per_class(PRED_2x3, TRUE_2x3, 4)
    assert np.isnan(iou[3])
    assert mean_iou(PRED_2x3, TRUE_2x3, 4) == pytest.approx(mean_iou(PRED_2x3, TRUE_2x3, 3))
    assert mean_iou(TRUE_2x3, TRUE_2x3, 3) == 1.0


def test_ignore_index_drops_pixels():
    # Ignore true class 2: remaining pixels (0,0,1 / 1) -> class 0 IoU 1/2, class 1 IoU 2/3.
    iou = iou_per_class(PRED_2x3, TRUE_2x3, 3, ignore_index=2)
    np.testing.assert_allclose(iou, [1 / 2, 2 / 3, np.nan])
    true = np.array([[255, 1]])
    assert confusion_matrix(np.array([[0, 1]]), true, 2, ignore_index=255).sum() == 1


def test_label_validation():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(PRED_2x3, TRUE_2x3[:, :2], 3)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_matrix(PRED_2x3, TRUE_2x3, 2)
    with pytest.raises(ValueError, match="integer"):
        mean_iou(PRED_2x3.astype(float), TRUE_2x3, 3)


def test_real_fake_accuracy_by_hand():
    pred = np.array([[0, 1, 3], [3, 2, 1]])  # class 3 is the fake class
    fake = np.array([[False, False, True], [False, False, True]])
    objects = np.array([[False, True, True], [True, True, True]])
    # all pixels: correct at (0,0) (0,1) (0,2) (1,1) -> 4/6
    assert real_fake_accuracy(pred, fake, [3]) == pytest.approx(4 / 6)
    # object pixels only: (0,1) ok, (0,2) ok, (1,0) wrong, (1,1) ok, (1,2) wrong -> 3/5
    assert real_fake_accuracy(pred, fake, [3], mask=objects) == pytest.approx(3 / 5)
    assert math.isnan(real_fake_accuracy(pred, fake, [3], mask=np.zeros_like(objects)))
    # balanced, object pixels: fakes (0,2) ok, (1,2) missed -> 1/2; reals (0,1) ok, (1,0)
    # called fake, (1,1) ok -> 2/3; mean 7/12
    balanced = real_fake_accuracy(pred, fake, [3], mask=objects, balanced=True)
    assert balanced == pytest.approx((1 / 2 + 2 / 3) / 2)
    # a net that never says "fake" scores 0.5 balanced, however rare the fakes
    never = np.zeros_like(pred)
    assert real_fake_accuracy(never, fake, [3], balanced=True) == pytest.approx(0.5)
    assert math.isnan(real_fake_accuracy(pred, np.zeros_like(fake), [3], balanced=True))
    with pytest.raises(ValueError, match="same shape"):
        real_fake_accuracy(pred, fake[:, :2], [3])
