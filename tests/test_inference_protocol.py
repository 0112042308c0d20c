"""autoseg.evaluation.test_time: multi-scale, flipped and sliding-window inference against plain forward passes
and independent computations."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoseg.utils.errors import UserError
from autoseg.evaluation.test_time import DEEPLAB_SCALES, InferenceProtocol, predict_logits, tile_starts
from autoseg.models import autodeeplab_from_arch

TINY_ARCH = {"path": [0, 1, 2, 1],
             "cell": {"blocks": [[["sep_conv_3x3", 0], ["dil_conv_3x3", 1]],
                                 [["skip_connect", 2], ["sep_conv_5x5", 1]]],
                      "concat": [2, 3]}}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A small searched Auto-DeepLab network (F=2, 5 classes) with trained-looking BN statistics."""
    torch.manual_seed(0)
    net = autodeeplab_from_arch(TINY_ARCH, 5, filter_multiplier=2, bn_momentum=1.0)
    with torch.no_grad():
        net.train()(torch.randn(2, 3, 24, 32))
        net.head.classifier.weight.mul_(20)
    return net.eval()


def _image(height: int = 16, width: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_one_scale_without_flip_is_exactly_the_plain_forward_pass(model):
    image = _image()
    assert torch.equal(predict_logits(model, image), model(image).float())
    assert torch.equal(predict_logits(model, image, scales=[1.0], flip=False), model(image))
    # The search evaluates at its training scale: the image resized, the logits resized back.
    small = F.interpolate(image, scale_factor=0.5, mode="bilinear", align_corners=False)
    expected = F.interpolate(model(small), size=(16, 24), mode="bilinear", align_corners=False)
    assert torch.equal(InferenceProtocol().at_scale(0.5).logits(model, image), expected)


@torch.no_grad()
def test_several_views_average_the_softmax_probabilities_at_the_input_size(model):
    image = _image()
    views = []
    for scale in (0.5, 1.25):
        scaled = F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False)
        for mirrored in (False, True):
            logits = model(scaled.flip(-1)).flip(-1) if mirrored else model(scaled)
            views.append(F.interpolate(logits, size=(16, 24), mode="bilinear", align_corners=False).softmax(1))
    combined = predict_logits(model, image, scales=(0.5, 1.25), flip=True)
    assert combined.shape == (1, 5, 16, 24)
    assert torch.allclose(combined.softmax(1), torch.stack(views).mean(0), atol=1e-6)
    assert torch.allclose(combined.exp().sum(1), torch.ones(1, 16, 24), atol=1e-5)  # log-probabilities


@torch.no_grad()
def test_flipping_the_image_flips_the_flip_averaged_prediction(model):
    image = _image()  # 16x24: every DeepLab scale maps the pixel grid onto a mirror-symmetric one
    mirrored = image.flip(-1)
    averaged = predict_logits(model, image, scales=DEEPLAB_SCALES, flip=True)
    tolerance = 1e-4 * averaged.abs().max()  # resizing is mirror-symmetric up to float rounding
    assert torch.allclose(predict_logits(model, mirrored, scales=DEEPLAB_SCALES, flip=True), averaged.flip(-1),
                          rtol=0, atol=tolerance)
    # Without the flip, the network itself is not mirror-symmetric.
    assert not torch.allclose(predict_logits(model, mirrored), predict_logits(model, image).flip(-1), rtol=0,
                              atol=100 * tolerance)


@torch.no_grad()
def test_a_window_covering_the_image_is_plain_inference(model):
    image = _image(17, 25)
    plain = model(image)
    assert torch.equal(predict_logits(model, image, window=(17, 25)), plain)
    assert torch.equal(predict_logits(model, image, window=(40, 40), stride=8), plain)


def test_tiles_start_every_stride_and_end_flush_with_the_border():
    assert tile_starts(10, 4, 3) == [0, 3, 6]
    assert tile_starts(10, 4, 4) == [0, 4, 6]
    assert tile_starts(12, 4, 4) == [0, 4, 8]
    assert tile_starts(3, 4, 2) == [0]
    for length, window, stride in ((23, 7, 5), (31, 8, 8), (9, 9, 1)):
        covered = torch.zeros(length)
        for start in tile_starts(length, window, stride):
            covered[start:start + min(window, length)] += 1
        assert covered.min() >= 1 and tile_starts(length, window, stride)[-1] == max(length - window, 0)


@torch.no_grad()
def test_overlapping_tiles_of_a_pointwise_model_equal_the_whole_image():
    torch.manual_seed(0)
    pointwise = nn.Conv2d(3, 4, 1)
    image = _image(23, 30)
    whole = pointwise(image)
    for window, stride in (((8, 8), (5, 5)), ((10, 40), (3, 3)), ((7, 11), (7, 11))):
        assert torch.allclose(predict_logits(pointwise, image, window=window, stride=stride), whole, atol=1e-6)
    # A model that sees context is not: tiles lose it at their borders.
    context = nn.Conv2d(3, 4, 5, padding=2)
    assert not torch.allclose(predict_logits(context, image, window=8, stride=5), context(image), atol=1e-3)


@torch.no_grad()
def test_overlapping_tile_logits_are_averaged():
    class Ones(nn.Module):
        """Logits of one everywhere: the average over any overlap is one again."""

        def forward(self, x):
            return torch.ones(x.shape[0], 2, *x.shape[-2:])

    assert torch.equal(predict_logits(Ones(), _image(23, 30), window=8, stride=3), torch.ones(1, 2, 23, 30))


def test_protocol_defaults_validation_and_description():
    protocol = InferenceProtocol(scales=(0.5, 1), flip=True, window=(512, 1024))
    assert protocol.stride == (math.ceil(512 * 2 / 3), math.ceil(1024 * 2 / 3))
    assert protocol.to_dict() == {"scales": [0.5, 1.0], "flip": True, "window": [512, 1024], "stride": [342, 683]}
    assert InferenceProtocol(window=9, stride=(4,)).to_dict()["stride"] == [4, 4]
    assert InferenceProtocol().to_dict() == {"scales": [1.0], "flip": False, "window": None, "stride": None}
    assert InferenceProtocol(scales=(1.0, 2.0)).at_scale(0.5).scales == (0.5, 1.0)
    with pytest.raises(UserError, match="positive numbers"):
        InferenceProtocol(scales=())
    with pytest.raises(UserError, match="positive numbers"):
        InferenceProtocol(scales=(1.0, -0.5))
    with pytest.raises(UserError, match="larger than window"):
        InferenceProtocol(window=(8, 8), stride=9)
    with pytest.raises(UserError, match="needs a window"):
        InferenceProtocol(stride=4)
    with pytest.raises(UserError, match="positive integers"):
        InferenceProtocol(window=(8, 0))
