"""Flow versions survive edits and restarts; the flows' media are served by content hash."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from bots.bundles import BundleArchive, MediaLibrary
from bots.runtime import Runtime, load_flows
from bots.settings import from_env
from flows.vocab import Channel, InboundKind
from tests.bots.conftest import Recorder, inbound

FORM = """\
organisations:
  thu:
    name: Đơn vị thử
    channels: {{webchat: {{}}}}
    menu: khao_sat
flows:
  khao_sat:
    title: Khảo sát
    steps:
      - ask: Câu một?
        expect: text
        save: mot
      - ask: {second}
        image: media/mau.png
        expect: text
        save: hai
      - end: "Xong: {{mot}} / {{hai}}"
"""


def png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 40), color).save(buffer, "PNG")
    return buffer.getvalue()


def write_flows(folder: Path, second: str, color: str) -> Path:
    (folder / "media").mkdir(parents=True, exist_ok=True)
    (folder / "media" / "mau.png").write_bytes(png(color))
    path = folder / "flows.yaml"
    path.write_text(FORM.format(second=second), encoding="utf-8")
    return path


async def test_a_session_finishes_on_the_version_it_began_after_an_edit_and_restart(
    tmp_path: Path,
) -> None:
    path = write_flows(tmp_path / "conf", "Câu hai (bản cũ)?", "red")
    settings = from_env({"LOA_CONFIG": str(path), "LOA_DATA_DIR": str(tmp_path / "var")})
    recorder = Recorder()

    runtime = Runtime(settings, adapters={Channel.TELEGRAM: recorder}, sweep_every=0)
    await runtime.start()
    old_version = runtime.version
    await runtime.pipeline.process(inbound("u1", kind=InboundKind.START))
    await runtime.pipeline.process(inbound("u1", "trả lời một"))
    await runtime.stop()
    assert recorder.texts()[-1] == "Câu hai (bản cũ)?"
    old_image = recorder.sent[-1][1].image
    assert old_image is not None and old_image.startswith("/media/")

    # The organiser edits the question being asked and its sample picture; Loa restarts.
    write_flows(tmp_path / "conf", "Câu hai (bản mới)?", "blue")
    runtime = Runtime(settings, adapters={Channel.TELEGRAM: recorder}, sweep_every=0)
    await runtime.start()
    assert runtime.version != old_version
    await runtime.pipeline.process(inbound("u1", "trả lời hai"))
    # The person mid-way is not asked again: the old version finishes their run.
    assert recorder.texts()[-1] == "Xong: trả lời một / trả lời hai"
    assert not any("cập nhật" in t for t in recorder.texts())
    # A newcomer gets the new version, with the new picture under a new name.
    await runtime.pipeline.process(inbound("u2", kind=InboundKind.START))
    await runtime.pipeline.process(inbound("u2", "một"))
    assert recorder.texts("u2")[-1] == "Câu hai (bản mới)?"
    new_image = recorder.sent[-1][1].image
    assert new_image is not None and new_image != old_image
    assert runtime.media.path(old_image.removeprefix("/media/")).read_bytes() == png("red")
    assert runtime.media.path(new_image.removeprefix("/media/")).read_bytes() == png("blue")
    await runtime.stop()
    assert (settings.bundles_dir / old_version / "flows.yaml").read_text(
        encoding="utf-8"
    ) == FORM.format(second="Câu hai (bản cũ)?")


def test_the_archive_compiles_a_kept_version_on_demand(tmp_path: Path) -> None:
    path = write_flows(tmp_path / "conf", "Câu hai?", "green")
    flows = load_flows(path)
    versions = {fid: flow.version for fid, flow in flows.compiled.flows.items()}
    calls: list[Path] = []

    def compile_dir(main: Path) -> object:
        calls.append(main)
        return load_flows(main).compiled

    archive = BundleArchive(tmp_path / "bundles", compile_dir)
    kept = archive.keep(flows.version, flows.files, flows.base_dir, flows.media, versions)
    assert kept is not None and (kept / "media" / "mau.png").is_file()
    path.write_text("broken: [", encoding="utf-8")  # the live file no longer matters

    fresh = BundleArchive(tmp_path / "bundles", compile_dir)  # as after a restart
    key = ("khao_sat", versions["khao_sat"])
    assert key in fresh and len(fresh) == 1
    flow = fresh[key]
    assert flow.version == versions["khao_sat"]
    assert fresh.get(key) is flow and len(calls) == 1  # compiled once, then cached
    assert fresh.get(("khao_sat", "0" * 12)) is None


def test_media_names_are_content_hashes_and_nothing_else_is_served(tmp_path: Path) -> None:
    library = MediaLibrary(tmp_path / "media")
    (tmp_path / "conf" / "media").mkdir(parents=True)
    (tmp_path / "conf" / "media" / "a.png").write_bytes(png("red"))
    assert library.add_bundle(tmp_path / "conf", ["media/a.png", "https://x.vn/b.png"]) == 1
    url = library.url("media/a.png")
    assert url.startswith("/media/") and url.endswith(".png") and len(url) == 7 + 64 + 4
    assert library.url("./media/a.png") == url
    assert library.url("https://x.vn/b.png") == "https://x.vn/b.png"
    assert library.path(url.removeprefix("/media/")) is not None
    for bad in ("../flows.yaml", "a.png", "0" * 64 + ".png", url.removeprefix("/media/") + "x"):
        assert library.path(bad) is None
