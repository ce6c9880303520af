"""Thumbnails of the test images packed into a few PNG sprite sheets.

A page showing hundreds of thumbnails then loads a handful of files instead of one per image: image
``i`` is cell ``i % per_sheet`` of sheet ``i // per_sheet``, cells filled row by row, ``columns``
cells per row. The page crops a cell out of its sheet with CSS (``object-position``).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SHEET_PIXELS = 1024
"""Width and height (at most) of one sheet."""
MAX_CELL = 64
"""Thumbnails are the image size up to this many pixels (32 × 32 on ``scenes`` and CIFAR)."""


@dataclass(frozen=True)
class SpriteLayout:
    """Where each image sits: ``cell`` pixels square, ``columns`` per row, ``per_sheet`` per sheet."""

    cell: int
    columns: int
    per_sheet: int
    num_images: int

    @property
    def num_sheets(self) -> int:
        return -(-self.num_images // self.per_sheet)

    def position(self, index: int) -> tuple[int, int, int]:
        """(sheet, x, y): the sheet of image ``index`` and the top-left pixel of its cell."""
        sheet, cell = divmod(index, self.per_sheet)
        row, column = divmod(cell, self.columns)
        return sheet, column * self.cell, row * self.cell


def sprite_layout(num_images: int, image_size: int) -> SpriteLayout:
    cell = min(image_size, MAX_CELL)
    columns = SHEET_PIXELS // cell
    return SpriteLayout(cell, columns, columns * columns, num_images)


def thumbnails(images: torch.Tensor, cell: int) -> np.ndarray:
    """uint8 [N, 3, H, W] -> uint8 [N, cell, cell, 3], area-averaged when the images are larger."""
    if images.shape[-1] != cell or images.shape[-2] != cell:
        images = F.interpolate(images.float(), size=(cell, cell), mode="area").round().clamp(0, 255).to(torch.uint8)
    return images.permute(0, 2, 3, 1).contiguous().numpy()


def sprite_sheets(images: torch.Tensor, layout: SpriteLayout) -> list[np.ndarray]:
    """The sheets as uint8 [rows · cell, columns · cell, 3] arrays; the last sheet has only the rows
    it needs, and unused cells of its last row are black."""
    cells = thumbnails(images, layout.cell)
    sheets = []
    for start in range(0, layout.num_images, layout.per_sheet):
        part = cells[start:start + layout.per_sheet]
        rows = -(-len(part) // layout.columns)
        grid = np.zeros((rows * layout.columns, layout.cell, layout.cell, 3), dtype=np.uint8)
        grid[: len(part)] = part
        grid = grid.reshape(rows, layout.columns, layout.cell, layout.cell, 3).transpose(0, 2, 1, 3, 4)
        sheets.append(grid.reshape(rows * layout.cell, layout.columns * layout.cell, 3))
    return sheets


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def write_sprite_sheets(images: torch.Tensor, directory: Path) -> tuple[SpriteLayout, list[str]]:
    """Write ``sheet_<k>.png`` into ``directory``; returns the layout and the file names in sheet order."""
    layout = sprite_layout(images.shape[0], int(images.shape[-1]))
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for k, sheet in enumerate(sprite_sheets(images, layout)):
        name = f"sheet_{k}.png"
        (directory / name).write_bytes(png_bytes(sheet))
        names.append(name)
    return layout, names
