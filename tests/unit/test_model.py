import numpy as np
import pytest

from facetracker.nn import model as model_lib


def test_vgg16_model_is_the_design_architecture():
    model = model_lib.build_model("vgg16", "none")
    net = model.net
    assert net.input_shape == (None, 120, 120, 3) and net.output_shape == (None, 5)
    assert model_lib.backbone_layer(model).name == "vgg16"
    layers = {layer.name: layer for layer in net.layers}
    for head, units in (("class", 1), ("box", 4)):
        assert type(layers[f"{head}_pool"]).__name__ == "GlobalMaxPooling2D"
        assert layers[f"{head}_dense"].units == 2048 and layers[f"{head}_dense"].activation.__name__ == "relu"
    assert layers["face"].units == 1 and layers["face"].activation.__name__ == "sigmoid"
    assert layers["box"].units == 4 and layers["box"].activation.__name__ == "sigmoid"
    out = model(np.random.default_rng(0).integers(0, 255, (2, 120, 120, 3)).astype("float32")).numpy()
    assert out.shape == (2, 5) and np.all((out >= 0) & (out <= 1))


def test_box_loss_counts_only_samples_with_a_face():
    model = model_lib.build_model("mobilenet-0.25", "none", head="spatial")
    output = np.array([[0.9, 0.1, 0.1, 0.5, 0.5], [0.2, 0.9, 0.9, 1.0, 1.0]], np.float32)
    true_box = np.array([[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]], np.float32)
    total, class_loss, box_loss = model.compute_losses(np.array([1.0, 0.0]), true_box, output)
    assert float(box_loss) == pytest.approx(0.0, abs=1e-7)  # the no-face row's wild box costs nothing
    expected_bce = -(np.log(0.9) + np.log(0.8)) / 2
    assert float(class_loss) == pytest.approx(expected_bce, rel=1e-5)
    _, _, box_loss = model.compute_losses(np.array([1.0, 0.0]), true_box, output + np.array([0, 0.1, 0, 0.1, 0], np.float32))
    # corner off by 0.1 in x, width unchanged: 0.01 averaged over the one face sample
    assert float(box_loss) == pytest.approx(0.01, rel=1e-4)
    assert float(total) > 0


def test_localization_loss_is_corner_plus_size():
    true = np.array([[0.2, 0.2, 0.6, 0.8]], np.float32)
    pred = np.array([[0.3, 0.2, 0.6, 0.7]], np.float32)
    # corner: 0.1^2; size: width 0.4 vs 0.3 -> 0.01, height 0.6 vs 0.5 -> 0.01
    assert float(model_lib.localization_loss(true, pred)[0]) == pytest.approx(0.03, rel=1e-5)
    assert float(model_lib.giou_loss(true, true)[0]) == pytest.approx(0.0, abs=1e-5)


def test_saved_model_is_self_contained_and_loads_safely(tmp_path):
    model = model_lib.build_model("mobilenet-0.25", "none", head="spatial")
    images = np.random.default_rng(1).integers(0, 255, (3, 120, 120, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model_lib.inference_copy(model).save(path)
    loaded = model_lib.load_model(path)
    assert isinstance(loaded, model_lib.FaceTracker)
    np.testing.assert_allclose(loaded(images).numpy(), model(images).numpy(), atol=1e-5)


def test_imagenet_weights_load_from_the_keras_cache_offline(keras_home):
    model = model_lib.build_model("mobilenetv2-0.35", "imagenet", head="spatial")
    backbone = model_lib.backbone_layer(model)
    first_conv = next(layer for layer in backbone.layers if layer.name == "Conv1").get_weights()[0]
    random = model_lib.build_model("mobilenetv2-0.35", "none")
    random_conv = next(layer for layer in model_lib.backbone_layer(random).layers if layer.name == "Conv1")
    assert not np.allclose(first_conv, random_conv.get_weights()[0])
    import h5py

    with h5py.File(keras_home / "models" / model_lib.BACKBONES["mobilenetv2-0.35"].weights_file) as f:
        stored = f["Conv1"]["Conv1"]["kernel:0"][()]
    np.testing.assert_allclose(first_conv, stored)


def test_missing_imagenet_weights_offline_say_what_to_do(empty_keras_home):
    with pytest.raises(model_lib.WeightsUnavailable) as error:
        model_lib.build_model("vgg16", "imagenet")
    message = str(error.value)
    assert "vgg16" in message and str(empty_keras_home) in message and "--weights none" in message


def test_flip_average_is_the_mean_of_the_image_and_its_mirror(tmp_path):
    model = model_lib.build_model("mobilenet-0.25", "none", head="spatial")
    images = np.random.default_rng(2).integers(0, 255, (3, 120, 120, 3)).astype("float32")
    direct = model(images).numpy()
    mirrored = model(images[:, :, ::-1]).numpy()
    # a box [x0, y0, x1, y1] on the mirror image is [1 - x1, y0, 1 - x0, y1] on the image
    unmirrored = np.stack([mirrored[:, 0], 1 - mirrored[:, 3], mirrored[:, 2], 1 - mirrored[:, 1], mirrored[:, 4]], 1)
    averaged = model_lib.inference_copy(model, flip_average=True)
    np.testing.assert_allclose(averaged(images).numpy(), (direct + unmirrored) / 2, atol=1e-5)
    path = tmp_path / "m.keras"
    averaged.save(path)
    np.testing.assert_allclose(model_lib.load_model(path)(images[:1]).numpy(), (direct[:1] + unmirrored[:1]) / 2,
                               atol=1e-5)


def test_grid_box_is_the_box_of_the_cell_where_the_face_is():
    where = np.full((2, 4, 4, 1), -50.0, np.float32)
    where[0, 1, 2, 0] = 50.0  # row 1, column 2: centre (x, y) = (2.5/4, 1.5/4)
    where[1, :, :, 0] = 0.0  # no preference: the mean of every cell's box
    edges = np.full((2, 4, 4, 4), 0.1, np.float32)
    box = model_lib.GridBox()([where, edges]).numpy()
    np.testing.assert_allclose(box[0], [0.625 - 0.1, 0.375 - 0.1, 0.625 + 0.1, 0.375 + 0.1], atol=1e-5)
    np.testing.assert_allclose(box[1], [0.4, 0.4, 0.6, 0.6], atol=1e-5)
    edges[:] = 1.0  # a box reaching past the image is clipped to it
    assert model_lib.GridBox()([where, edges]).numpy().min() == 0.0


def test_grid_head_model_saves_and_loads(tmp_path):
    model = model_lib.build_model("mobilenet-0.25", "none", head="grid")
    images = np.random.default_rng(3).integers(0, 255, (2, 120, 120, 3)).astype("float32")
    out = model(images).numpy()
    assert out.shape == (2, 5) and np.all((out >= 0) & (out <= 1))
    model_lib.inference_copy(model).save(tmp_path / "m.keras")
    np.testing.assert_allclose(model_lib.load_model(tmp_path / "m.keras")(images).numpy(), out, atol=1e-5)


def test_a_dense_network_runs_its_weights_at_a_camera_frames_shape():
    """Every layer of the dense network is a convolution: rebuilt at 128x96 it holds the same weights,
    answers for each of its 16x12 cells, and a photo fitting both inputs gets nearly the same cells
    away from the bottom edge (where only the grey below the photo differs)."""
    net = model_lib.build_dense_network("mobilenet-0.25", None, size=128)
    shaped = model_lib.dense_network_at(net, (128, 96))
    assert shaped.input_shape == (None, 96, 128, 3) and shaped.output_shape == (None, 16 * 12, 5)
    for a, b in zip(net.get_weights(), shaped.get_weights()):
        np.testing.assert_array_equal(a, b)
    photo = np.random.default_rng(0).integers(0, 255, (1, 96, 128, 3)).astype("float32")
    square = np.full((1, 128, 128, 3), 127.0, np.float32)
    square[:, :96] = photo
    rows_square = net(square).numpy().reshape(16, 16, 5)[:6]
    rows_shaped = shaped(photo).numpy().reshape(12, 16, 5)[:6]
    np.testing.assert_allclose(rows_shaped[..., 0], rows_square[..., 0], atol=0.02)
    # boxes are in 0..1 of each input: the same pixels once scaled by the input's height
    np.testing.assert_allclose(rows_shaped[..., 2] * 96, rows_square[..., 2] * 128, atol=1.0)
    with pytest.raises(ValueError, match="multiple of 32"):
        model_lib.dense_network_at(net, (128, 100))
