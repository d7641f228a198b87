"""Hub models (FaceNet, ArcFace, CLIP, BEiT): weights cannot be downloaded here, so their code paths
run with random weights, saved to a local weights directory and loaded back the way an air-gapped
site would; without weights they fail with one clear error."""

import numpy as np
import pytest
import torch

from castfinder.core.errors import MissingWeightsError
from castfinder.models.base import Face
from castfinder.models.registry import make_face_embedder, make_frame_embedder

from conftest import run_cli, clip

FRAMES = [np.random.default_rng(i).integers(0, 255, (240, 320, 3), dtype=np.uint8) for i in range(3)]
FACE = Face(np.array([100, 60, 180, 160], np.float32),
            np.array([[125, 95], [155, 95], [140, 115], [128, 135], [152, 135]], np.float32), 0.99)


def check_vectors(v, n, dim):
    assert v.shape == (n, dim) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert np.isfinite(v).all()


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("CASTFINDER_OFFLINE", "1")


@pytest.mark.parametrize("name,file", [("facenet-vggface2", "facenet-vggface2.pt"), ("arcface", "buffalo_l/w600k_r50.onnx"),
                                       ("clip-vit-b32", "clip-vit-b32.pt"), ("beit-cls", "beit-base.safetensors")])
def test_missing_weights_give_one_clear_error(name, file, tmp_path):
    make = make_face_embedder if name in ("facenet-vggface2", "arcface") else make_frame_embedder
    with pytest.raises(MissingWeightsError) as err:
        make(name, weights_dir=str(tmp_path))
    assert file in str(err.value) and "--weights-dir" in str(err.value)


def test_missing_weights_from_the_cli(tmp_path):
    cfg = tmp_path / "facenet.yaml"
    cfg.write_text("ingest:\n  face_embedders: [facenet-vggface2]\n")
    r = run_cli("ingest", clip("friends"), "--index", tmp_path / "idx", "--config", cfg,
                env={**__import__("os").environ, "CASTFINDER_OFFLINE": "1"})
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert "facenet-vggface2" in r.stderr.strip().splitlines()[-1]


def test_facenet_from_local_weights(tmp_path):
    from facenet_pytorch import InceptionResnetV1
    torch.manual_seed(0)
    torch.save(InceptionResnetV1(pretrained=None).state_dict(), tmp_path / "facenet-vggface2.pt")
    emb = make_face_embedder("facenet-vggface2", weights_dir=str(tmp_path), device="cpu")
    v = emb.embed_faces(FRAMES[0], [FACE, FACE])
    check_vectors(v, 2, 512)
    assert np.allclose(v[0], v[1], atol=1e-5)
    assert emb.embed_faces(FRAMES[0], []).shape == (0, 512)


def test_arcface_onnx_from_local_weights(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 512)).eval()
    path = tmp_path / "buffalo_l" / "w600k_r50.onnx"
    path.parent.mkdir()
    torch.onnx.export(net, torch.randn(1, 3, 112, 112), str(path), input_names=["input.1"],
                      dynamic_axes={"input.1": {0: "n"}}, dynamo=False)
    emb = make_face_embedder("arcface", weights_dir=str(tmp_path), device="cpu")
    v = emb.embed_faces(FRAMES[1], [FACE])
    check_vectors(v, 1, 512)


def test_clip_vit_from_local_weights_and_rn101_random(tmp_path):
    import open_clip
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    torch.save(model.state_dict(), tmp_path / "clip-vit-b32.pt")
    emb = make_frame_embedder("clip-vit-b32", weights_dir=str(tmp_path), device="cpu")
    v = emb.embed_frames(FRAMES)
    check_vectors(v, 3, 512)
    with torch.inference_mode():  # same weights as saved: same features as the model we made
        ref = model.eval().encode_image(__import__("models.preprocess", fromlist=["x"]).batch_tensor(
            FRAMES[:1], 224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), "cpu",
            center_crop=True)).numpy()
    assert np.allclose(v[0], ref[0] / np.linalg.norm(ref[0]), atol=1e-4)
    rn = make_frame_embedder("clip-rn101", random_weights=True, device="cpu")
    check_vectors(rn.embed_frames(FRAMES[:2]), 2, 512)


def test_beit_cls_and_mean_differ(tmp_path):
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(0)
    model = timm.create_model("beit_base_patch16_224.in22k_ft_in22k_in1k", pretrained=False)
    save_file(model.state_dict(), str(tmp_path / "beit-base.safetensors"))
    cls = make_frame_embedder("beit-cls", weights_dir=str(tmp_path), device="cpu")
    mean = make_frame_embedder("beit-mean", weights_dir=str(tmp_path), device="cpu")
    a, b = cls.embed_frames(FRAMES[:2]), mean.embed_frames(FRAMES[:2])
    check_vectors(a, 2, 768)
    check_vectors(b, 2, 768)
    assert not np.allclose(a, b, atol=1e-3)
