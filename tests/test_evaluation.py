"""The ImageNet test protocols (Sec. 3.4): crop geometry, flips, the fully-convolutional form, averaging."""

import pytest
import torch

from resnet_repro.errors import UserError
from resnet_repro.evaluation import (
    PROTOCOLS,
    Protocol,
    fully_convolutional_scores,
    get_protocol,
    score,
    top_k_errors,
    views,
)
from resnet_repro.models import build_model


def coordinate_image(height: int = 256, width: int = 320) -> torch.Tensor:
    """[3, H, W]: channel 0 holds the row, channel 1 the column, channel 2 a constant."""
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    return torch.stack([rows, cols, torch.ones(height, width)])


def test_ten_crops_are_the_four_corners_and_the_centre_and_their_mirror_images():
    image = coordinate_image()  # shorter side already 256: the resize keeps every pixel
    crops = views(image, PROTOCOLS["10crop"])
    assert len(crops) == 10 and all(c.shape == (3, 224, 224) for c in crops)
    corners = {(int(c[0, 0, 0]), int(c[1, 0, 0])) for c in crops[:5]}  # top-left pixel of each crop
    assert corners == {(0, 0), (0, 96), (32, 0), (32, 96), (16, 48)}  # tl, tr, bl, br, centre of 256x320
    expected = [image[:, r : r + 224, c : c + 224] for r, c in corners]
    mirrored = [e.flip(-1) for e in expected]
    for crop in crops[:5]:
        assert any(torch.equal(crop, e) for e in expected)
    for crop in crops[5:]:
        assert any(torch.equal(crop, m) for m in mirrored)


def test_center_protocol_resizes_the_shorter_side_to_256_and_takes_the_centre_224():
    image = torch.rand(3, 300, 500)
    (crop,) = views(image, get_protocol("center"))
    assert crop.shape == (3, 224, 224)
    resized = torch.nn.functional.interpolate(image[None], size=(256, 426), mode="bilinear", antialias=True)[0]
    assert torch.allclose(crop, resized[:, 16:240, 101:325], atol=1e-5)


def test_multiscale_views_are_the_whole_image_and_its_flip_at_five_scales():
    image = torch.rand(3, 300, 400)
    out = views(image, PROTOCOLS["multiscale"])
    assert [min(v.shape[-2:]) for v in out] == [224, 224, 256, 256, 384, 384, 480, 480, 640, 640]
    assert torch.equal(out[1], out[0].flip(-1))
    assert out[-1].shape[-1] == 853  # the aspect ratio is kept: 400/300 * 640


@pytest.mark.parametrize("size", [224, 320])
def test_fully_convolutional_form_equals_the_ordinary_forward(size):
    model = build_model("resnet18").eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        scores = fully_convolutional_scores(model, x)
        assert scores.shape == (2, 1000, size // 32, size // 32)
        assert torch.allclose(scores.mean(dim=(2, 3)), model(x), atol=1e-4)


def test_score_averages_the_softmax_of_every_view():
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    image = torch.rand(3, 256, 300)
    with torch.no_grad():
        probabilities = score(model, image, PROTOCOLS["10crop"])
        expected = torch.stack([model(v[None]).softmax(1)[0] for v in views(image, PROTOCOLS["10crop"])]).mean(0)
    assert torch.allclose(probabilities, expected, atol=1e-6)
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_a_crop_larger_than_the_image_and_an_unknown_protocol_are_user_errors():
    with pytest.raises(UserError, match="does not fit"):
        views(torch.rand(3, 120, 150), Protocol("tiny", (100,), 224, "center"))
    with pytest.raises(UserError, match="center, 10crop, multiscale"):
        get_protocol("12crop")


def test_top_k_errors_count_a_label_anywhere_in_the_top_k():
    probabilities = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = torch.tensor([0, 1, 2])
    errors = top_k_errors(probabilities, labels, ks=(1, 2))
    assert errors[1] == pytest.approx(200 / 3) and errors[2] == pytest.approx(100 / 3)
