"""Draw the sample screenshots that flows.yaml shows next to each evidence question.

They are mock-ups, not real app screens: every one is stamped "ẢNH MẪU" and carries made-up
data, so nobody mistakes a sample for evidence. Re-run after changing a design:

    uv run python scripts/make_samples.py            # writes media/*.png
    uv run python scripts/make_samples.py /tmp/mau   # or into another folder

Only Pillow is needed. The font must have Vietnamese glyphs; DejaVu Sans does.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 360, 640
ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / "media"
FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/local/share/fonts"),
)

Font = ImageFont.FreeTypeFont
Colour = tuple[int, int, int]


def font(size: int, bold: bool = False) -> Font:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for folder in FONT_DIRS:
        if (folder / name).exists():
            return ImageFont.truetype(str(folder / name), size)
    sys.exit(f"Không tìm thấy phông {name} (cần phông có dấu tiếng Việt, ví dụ DejaVu Sans).")


def status_bar(draw: ImageDraw.ImageDraw, background: Colour, ink: Colour) -> None:
    draw.rectangle((0, 0, WIDTH, 24), fill=background)
    draw.text((14, 5), "09:41", font=font(12, bold=True), fill=ink)
    # signal bars and a battery, drawn rather than typed so no emoji font is needed
    for i, height in enumerate((4, 7, 10)):
        x = WIDTH - 78 + i * 6
        draw.rectangle((x, 17 - height, x + 3, 17), fill=ink)
    draw.rounded_rectangle((WIDTH - 44, 7, WIDTH - 18, 18), radius=3, outline=ink, width=1)
    draw.rectangle((WIDTH - 42, 9, WIDTH - 24, 16), fill=ink)
    draw.rectangle((WIDTH - 17, 10, WIDTH - 15, 15), fill=ink)


def app_bar(draw: ImageDraw.ImageDraw, title: str, background: Colour) -> None:
    draw.rectangle((0, 24, WIDTH, 76), fill=background)
    draw.line((22, 50, 32, 40), fill="white", width=3)  # back arrow
    draw.line((22, 50, 32, 60), fill="white", width=3)
    draw.text((WIDTH // 2, 50), title, font=font(18, bold=True), fill="white", anchor="mm")


def stamp(image: Image.Image, caption: str) -> Image.Image:
    """The diagonal "ẢNH MẪU" watermark and a caption band saying what to send."""
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    mark = Image.new("RGBA", (520, 110), (0, 0, 0, 0))
    ImageDraw.Draw(mark).text(
        (260, 55), "ẢNH MẪU", font=font(72, bold=True), fill=(220, 30, 30, 120), anchor="mm"
    )
    mark = mark.rotate(32, expand=True, resample=Image.Resampling.BICUBIC)
    overlay.paste(mark, ((WIDTH - mark.width) // 2, (HEIGHT - mark.height) // 2), mark)
    band = ImageDraw.Draw(overlay)
    band.rectangle((0, HEIGHT - 58, WIDTH, HEIGHT), fill=(200, 20, 20, 235))
    band.text(
        (WIDTH // 2, HEIGHT - 42), "ẢNH MẪU", font=font(16, bold=True), fill="white", anchor="mm"
    )
    band.text((WIDTH // 2, HEIGHT - 20), caption, font=font(12), fill="white", anchor="mm")
    merged = Image.alpha_composite(image.convert("RGBA"), overlay)
    # A small palette keeps each file well under 60 KB without visible loss on flat mock-ups.
    return merged.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)


def field_rows(
    draw: ImageDraw.ImageDraw, top: int, rows: list[tuple[str, str]], line: Colour
) -> None:
    label_font, value_font = font(11), font(14, bold=True)
    for i, (label, value) in enumerate(rows):
        y = top + i * 46
        draw.text((20, y), label, font=label_font, fill=(110, 110, 110))
        draw.text((20, y + 16), value, font=value_font, fill=(30, 30, 30))
        draw.line((20, y + 40, WIDTH - 20, y + 40), fill=line, width=1)


def qr_like(draw: ImageDraw.ImageDraw, left: int, top: int, size: int, seed: int) -> None:
    """A QR-looking grid (finder squares and random modules). It encodes nothing on purpose."""
    modules = 25
    cell = size // modules
    rng = random.Random(seed)
    draw.rectangle((left - 8, top - 8, left + cell * modules + 8, top + cell * modules + 8),
                   fill="white")

    def finder(mx: int, my: int) -> None:
        x, y = left + mx * cell, top + my * cell
        draw.rectangle((x, y, x + 7 * cell - 1, y + 7 * cell - 1), fill="black")
        draw.rectangle((x + cell, y + cell, x + 6 * cell - 1, y + 6 * cell - 1), fill="white")
        draw.rectangle((x + 2 * cell, y + 2 * cell, x + 5 * cell - 1, y + 5 * cell - 1),
                       fill="black")

    reserved = {(x, y) for x in range(8) for y in range(8)}
    reserved |= {(modules - 1 - x, y) for x in range(8) for y in range(8)}
    reserved |= {(x, modules - 1 - y) for x in range(8) for y in range(8)}
    for my in range(modules):
        for mx in range(modules):
            if (mx, my) not in reserved and rng.random() < 0.48:
                x, y = left + mx * cell, top + my * cell
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill="black")
    finder(0, 0)
    finder(modules - 7, 0)
    finder(0, modules - 7)


def vneid() -> Image.Image:
    red: Colour = (176, 28, 36)
    image = Image.new("RGB", (WIDTH, HEIGHT), (246, 246, 246))
    draw = ImageDraw.Draw(image)
    status_bar(draw, red, (255, 255, 255))
    app_bar(draw, "Thông tin cá nhân", red)
    draw.ellipse((WIDTH // 2 - 34, 88, WIDTH // 2 + 34, 156), fill=(205, 205, 205))
    draw.ellipse((WIDTH // 2 - 13, 100, WIDTH // 2 + 13, 126), fill=(150, 150, 150))
    draw.pieslice((WIDTH // 2 - 26, 124, WIDTH // 2 + 26, 176), 180, 360, fill=(150, 150, 150))
    draw.text((WIDTH // 2, 170), "NGUYỄN VĂN MẪU", font=font(17, bold=True), fill=(30, 30, 30),
              anchor="mm")
    draw.rounded_rectangle((58, 186, WIDTH - 58, 210), radius=12, fill=(226, 243, 230))
    draw.text((WIDTH // 2, 198), "Tài khoản định danh mức 2", font=font(12, bold=True),
              fill=(20, 120, 50), anchor="mm")
    draw.rectangle((10, 222, WIDTH - 10, 572), fill="white")
    field_rows(
        draw,
        232,
        [
            ("Số định danh cá nhân", "079 2•• ••• 123"),
            ("Ngày sinh", "01/01/2000"),
            ("Giới tính", "Nam"),
            ("Quốc tịch", "Việt Nam"),
            ("Quê quán", "Phường Mẫu, TP. Hồ Chí Minh"),
            ("Nơi thường trú", "12 đường Mẫu, phường Mẫu"),
            ("Ngày cấp CCCD", "15/05/2021"),
        ],
        (236, 236, 236),
    )
    return stamp(image, "VNeID › Cá nhân › Thông tin cá nhân (mức 2)")


def thanh_nien_vn() -> Image.Image:
    blue: Colour = (0, 84, 166)
    image = Image.new("RGB", (WIDTH, HEIGHT), (234, 242, 251))
    draw = ImageDraw.Draw(image)
    status_bar(draw, blue, (255, 255, 255))
    app_bar(draw, "Mã QR của tôi", blue)
    draw.rounded_rectangle((24, 96, WIDTH - 24, 548), radius=18, fill="white")
    draw.ellipse((WIDTH // 2 - 26, 110, WIDTH // 2 + 26, 162), fill=(0, 84, 166))
    draw.text((WIDTH // 2, 136), "TN", font=font(20, bold=True), fill="white", anchor="mm")
    draw.text((WIDTH // 2, 182), "Nguyễn Văn Mẫu", font=font(18, bold=True), fill=(20, 20, 20),
              anchor="mm")
    draw.text((WIDTH // 2, 206), "Đoàn viên · Đoàn phường Mẫu", font=font(12),
              fill=(90, 90, 90), anchor="mm")
    draw.rounded_rectangle((112, 220, WIDTH - 112, 242), radius=11, fill=(226, 243, 230))
    draw.text((WIDTH // 2, 231), "Đã xác thực", font=font(12, bold=True), fill=(20, 120, 50),
              anchor="mm")
    qr_like(draw, 80, 262, 200, seed=2023)
    draw.text((WIDTH // 2, 492), "Đưa mã này cho cán bộ Đoàn để quét", font=font(12),
              fill=(90, 90, 90), anchor="mm")
    draw.text((WIDTH // 2, 516), "Ứng dụng Thanh niên Việt Nam", font=font(12, bold=True),
              fill=blue, anchor="mm")
    return stamp(image, "Thanh niên Việt Nam › Mã QR của tôi")


def ngan_hang() -> Image.Image:
    teal: Colour = (0, 122, 110)
    image = Image.new("RGB", (WIDTH, HEIGHT), (240, 246, 245))
    draw = ImageDraw.Draw(image)
    status_bar(draw, teal, (255, 255, 255))
    app_bar(draw, "Mã QR nhận tiền", teal)
    draw.rounded_rectangle((24, 96, WIDTH - 24, 540), radius=18, fill="white")
    draw.text((WIDTH // 2, 122), "NGÂN HÀNG MẪU", font=font(18, bold=True), fill=teal,
              anchor="mm")
    draw.rounded_rectangle((128, 140, WIDTH - 128, 160), radius=4, fill=(200, 30, 40))
    draw.text((WIDTH // 2, 150), "VietQR", font=font(12, bold=True), fill="white", anchor="mm")
    qr_like(draw, 80, 178, 200, seed=84)
    draw.text((WIDTH // 2, 406), "NGUYEN VAN MAU", font=font(17, bold=True), fill=(20, 20, 20),
              anchor="mm")
    draw.text((WIDTH // 2, 432), "Số tài khoản: 0123 456 789", font=font(14),
              fill=(60, 60, 60), anchor="mm")
    for i, label in enumerate(("Lưu ảnh", "Chia sẻ")):
        left = 44 + i * 144
        draw.rounded_rectangle((left, 470, left + 128, 510), radius=20, outline=teal, width=2)
        draw.text((left + 64, 490), label, font=font(14, bold=True), fill=teal, anchor="mm")
    return stamp(image, "Ứng dụng ngân hàng › Mã QR nhận tiền")


SAMPLES: dict[str, Callable[[], Image.Image]] = {
    "mau-vneid.png": vneid,
    "mau-thanh-nien-vn.png": thanh_nien_vn,
    "mau-ngan-hang.png": ngan_hang,
}


def write_samples(folder: Path) -> list[Path]:
    """Draw every sample into `folder` (created if missing); return the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw_sample in SAMPLES.items():
        path = folder / name
        draw_sample().save(path, optimize=True)
        written.append(path)
    return written


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else MEDIA
    for path in write_samples(folder):
        print(f"{path}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
