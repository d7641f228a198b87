"""An allowed URL prefix cannot be used to make FFmpeg read elsewhere: real HTTP servers on 127.0.0.1
(one serving the allowed prefix, one "target" outside it that records every request), a real
`castfinder serve --allow-url-prefix` and the CLI's `ingest --allow-url-prefix`. A redirect out of the
prefix, and an HLS playlist under the prefix whose segments, variants or keys lie elsewhere (another
port, another path, file://), are refused with the uniform 403 and the target is never asked; a
redirect that stays inside, and an HLS stream whose segments stay inside, are ingested."""

from __future__ import annotations

import shutil

import av
import pytest

from conftest import clip, make_video, run_cli
from service_helpers import Server, Site


def hls_segments(folder, seconds=6.0):
    """The first seconds of the friends clip as an HLS stream (index.m3u8 + indexN.ts), remuxed."""
    folder.mkdir(parents=True, exist_ok=True)
    with av.open(str(clip("friends"))) as src:
        video = src.streams.video[0]
        with av.open(str(folder / "index.m3u8"), "w", format="hls",
                     options={"hls_time": "2", "hls_list_size": "0", "hls_playlist_type": "vod"}) as out:
            stream = out.add_stream_from_template(video)
            for packet in src.demux(video):
                if packet.dts is None:
                    continue
                if packet.pts is not None and packet.pts * packet.time_base > seconds:
                    break
                packet.stream = stream
                out.mux(packet)
    segments = sorted(p.name for p in folder.glob("index*.ts"))
    assert len(segments) >= 2, segments
    return segments


def playlist(lines) -> str:
    body = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:3", "#EXT-X-MEDIA-SEQUENCE:0"]
    for line in lines:
        body += (["#EXTINF:2.0,", line] if not line.startswith("#") else [line])
    return "\n".join(body + ["#EXT-X-ENDLIST", ""])


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """`allowed` serves the prefix /allowed/ (and a /secret/ beside it), `target` is elsewhere; both
    hold the same real segments and clip, so whatever is refused is refused for where it is, not
    for what it is."""
    root = tmp_path_factory.mktemp("web")
    segments = hls_segments(root / "allowed" / "hls")
    (root / "secret").mkdir()
    make_video(root / "allowed" / "clip.mp4", seconds=2.0)
    shutil.copy(root / "allowed" / "clip.mp4", root / "secret" / "clip.mp4")
    for seg in segments:
        shutil.copy(root / "allowed" / "hls" / seg, root / seg)
    target = Site(root)
    hls = root / "allowed" / "hls"
    (hls / "other-port.m3u8").write_text(playlist([f"{target.url}/{s}" for s in segments]))
    (hls / "other-path.m3u8").write_text(playlist([f"/{s}" for s in segments]))              # same host, out of /allowed/
    (hls / "dot-dot.m3u8").write_text(playlist([f"../../{s}" for s in segments]))
    (hls / "file.m3u8").write_text(playlist([f"file://{root}/{s}" for s in segments]))
    (hls / "mixed.m3u8").write_text(playlist([segments[0]] + [f"{target.url}/{s}" for s in segments[1:]]))
    (hls / "variant.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n"
                                      f"{target.url}/allowed/hls/index.m3u8\n")
    (hls / "key.m3u8").write_text(playlist([f'#EXT-X-KEY:METHOD=AES-128,URI="{target.url}/key.bin"'] + segments))
    allowed = Site(root, redirects={
        "/allowed/to-other-port.mp4": f"{target.url}/allowed/clip.mp4",
        "/allowed/to-other-path.mp4": "/secret/clip.mp4",
        "/allowed/hls/to-other-port.m3u8": f"{target.url}/allowed/hls/index.m3u8",
        "/allowed/hls/seg-redirect.m3u8": "/allowed/hls/seg-redirect-list.m3u8",
        "/allowed/moved.mp4": "/allowed/clip.mp4",                                 # stays inside: followed
    })
    # segments under the prefix that each redirect out of it
    (hls / "seg-redirect-list.m3u8").write_text(playlist([f"r{i}.ts" for i in range(len(segments))]))
    for i, s in enumerate(segments):
        allowed.redirects[f"/allowed/hls/r{i}.ts"] = f"{target.url}/{s}"
    yield allowed, target
    allowed.close()
    target.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, sites):
    allowed, _ = sites
    srv = Server(tmp_path_factory.mktemp("guard") / "index", media_roots=(),
                 extra=("--allow-url-prefix", f"{allowed.url}/allowed/"))
    yield srv
    log = srv.stop()
    assert "Traceback" not in log, log


REFUSED = ["/allowed/to-other-port.mp4", "/allowed/to-other-path.mp4", "/allowed/hls/to-other-port.m3u8",
           "/allowed/hls/other-port.m3u8", "/allowed/hls/other-path.m3u8", "/allowed/hls/dot-dot.m3u8",
           "/allowed/hls/file.m3u8", "/allowed/hls/mixed.m3u8", "/allowed/hls/variant.m3u8",
           "/allowed/hls/key.m3u8", "/allowed/hls/seg-redirect.m3u8"]


def test_redirects_and_playlists_out_of_the_prefix_are_refused(server, sites):
    allowed, target = sites
    plain = server.client.post("/videos", json={"source": f"{target.url}/allowed/clip.mp4"})
    assert plain.status_code == 403
    for path in REFUSED:
        r = server.client.post("/videos", json={"source": allowed.url + path})
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert r.text == plain.text, (path, r.text)          # the one uniform refusal
    assert target.hits == [], target.hits                     # nothing outside was ever asked for
    assert not [h for h in allowed.hits if not h.startswith("/allowed/")], allowed.hits
    assert server.client.get("/videos").json() == []          # no video row for any of them


def test_the_cli_refuses_a_redirect_out_of_the_prefix(sites, tmp_path):
    allowed, target = sites
    for path in ("/allowed/to-other-port.mp4", "/allowed/hls/other-port.m3u8"):
        r = run_cli("ingest", allowed.url + path, "--index", tmp_path / "idx",
                    "--allow-url-prefix", f"{allowed.url}/allowed/", timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "not allowed" in r.stderr.strip().splitlines()[-1], r.stderr
    assert target.hits == [], target.hits


def test_inside_the_prefix_redirects_and_hls_are_ingested(server, sites):
    allowed, target = sites
    for path in ("/allowed/moved.mp4", "/allowed/hls/index.m3u8"):
        r = server.client.post("/videos", json={"source": allowed.url + path})
        assert r.status_code == 202, (path, r.text)
        video = server.wait_video(r.json()["id"], timeout=300)
        assert video["status"] == "done" and video["error"] is None, video
        assert video["frames_decoded"] > 0 and video["vectors"] > 0 and video["shots"] >= 1, video
    hls = server.client.get("/videos").json()[-1]
    assert hls["frames_decoded"] >= 150, hls                  # 6 s of 30 fps: every segment was read
    assert target.hits == [], target.hits
    assert {"/allowed/hls/index.m3u8", "/allowed/hls/index0.ts", "/allowed/moved.mp4", "/allowed/clip.mp4"} \
        <= set(allowed.hits)


def test_the_api_takes_the_same_prefixes(sites, tmp_path):
    import castfinder
    from castfinder.core.errors import InputError, SourceForbiddenError

    allowed, target = sites
    for bad in ("http://", ["file:///etc/"], ["http://u:p@host/"], [42]):
        with pytest.raises(InputError, match="url_prefixes"):
            castfinder.open_index(tmp_path / "idx", url_prefixes=bad)
    with castfinder.open_index(tmp_path / "idx", url_prefixes=[]) as idx:          # an empty list: no URL at all
        with pytest.raises(SourceForbiddenError):
            idx.start_ingest(f"{allowed.url}/allowed/clip.mp4")
    with castfinder.open_index(tmp_path / "idx", url_prefixes=[f"{allowed.url}/allowed/"]) as idx:
        with pytest.raises(SourceForbiddenError):
            idx.start_ingest(f"{allowed.url}/allowed/hls/other-port.m3u8")
    assert target.hits == [], target.hits
