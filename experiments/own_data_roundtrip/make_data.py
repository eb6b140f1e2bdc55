"""Example files for the README's own-data round trip, written from data shipped in installed packages.

    python experiments/own_data_roundtrip/make_data.py outputs/own_data

- iris.csv (150 flowers, 4 numeric columns + species) and new_flowers.csv (20 rows, no species column)
- news.csv (BBC News, 1 in 2 articles' first 600 characters + topic) and new_articles.txt (30 others, one per line)
- digit_images/<digit>/*.png (sklearn's 8x8 digits, 1 in 2) and new_digits/ (40 others, a flat folder)
"""

import csv
import sys
from pathlib import Path

import numpy as np


def main(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    from sklearn.datasets import load_digits, load_iris

    iris = load_iris()
    cols = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    order = np.random.default_rng(0).permutation(150)
    with open(root / "iris.csv", "w", newline="") as f, open(root / "new_flowers.csv", "w", newline="") as g:
        train, new = csv.writer(f), csv.writer(g)
        train.writerow([*cols, "species"])
        new.writerow(["flower", *cols])
        for n, i in enumerate(order):
            values = [float(v) for v in iris.data[i]]
            train.writerow([*values, iris.target_names[iris.target[i]]])
            if n < 20:
                new.writerow([f"f{n}", *values])

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from transferlab.data.bbc_news import read_corpus

    texts, labels, names = read_corpus()
    flat = [" ".join(t.split()) for t in texts]
    with open(root / "news.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "topic"])
        w.writerows([flat[i][:600], names[labels[i]]] for i in range(0, len(flat), 2))
    (root / "new_articles.txt").write_text("".join(flat[i][:600] + "\n" for i in range(1, 61, 2)))

    from PIL import Image

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        pixels = Image.fromarray((image * 255 / 16).astype(np.uint8))
        if i % 2 == 0:
            (root / "digit_images" / str(label)).mkdir(parents=True, exist_ok=True)
            pixels.save(root / "digit_images" / str(label) / f"{i}.png")
        elif i < 80:
            (root / "new_digits").mkdir(exist_ok=True)
            pixels.save(root / "new_digits" / f"{i}.png")
    print(f"wrote iris.csv, new_flowers.csv, news.csv, new_articles.txt, digit_images/, new_digits/ under {root}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/own_data"))
