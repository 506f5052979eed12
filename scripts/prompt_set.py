"""The fixed, varied benchmark prompt set: short questions, documents, and a few long ones."""
import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "benchmark_prompts.json"


def benchmark_prompts(count: int = 32) -> list[str]:
    """`count` prompts: half short questions, most of the rest a few hundred tokens, 1 in 8 over 1,000."""
    data = json.loads(DATA.read_text())
    questions, paragraphs = data["questions"], data["paragraphs"]
    prompts = []
    for i in range(count):
        if i % 8 == 7:  # a long document: eight paragraphs, over 1,000 tokens
            body = " ".join(paragraphs[(i + k) % len(paragraphs)] for k in range(8))
            prompts.append(f"{body}\n\nWrite a short summary of the text above.")
        elif i % 2 == 1:  # a document of two or three paragraphs
            body = " ".join(paragraphs[(i + k) % len(paragraphs)] for k in range(2 + i % 3 % 2))
            prompts.append(f"{body}\n\nWhat is the main idea of this text?")
        else:
            prompts.append(questions[(i // 2) % len(questions)])
    return prompts
