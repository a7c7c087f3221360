"""Generation reports which continuations ended with an end of turn and which were cut at max_new_tokens."""

import torch

from sft_research.model.generation import GenerationConfig, generate_with_status


class ScriptedModel(torch.nn.Module):
    """Returns the prompt followed by fixed new tokens, as ``generate`` would."""

    def __init__(self, new_tokens):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.new_tokens = torch.tensor(new_tokens)

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        assert input_ids.device == self.weight.device and max_new_tokens == self.new_tokens.shape[1]
        return torch.cat([input_ids, self.new_tokens], dim=1)


def test_finished_means_an_end_of_turn_was_generated(tiny_tokenizer):
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    seven, nine = (tiny_tokenizer.encode(text, add_special_tokens=False)[0] for text in ("7", "9"))
    model = ScriptedModel([[seven, eos, pad], [seven, nine, seven], [eos, pad, pad]])
    prompts = torch.tensor([[5, 6], [5, 6], [5, 6]])
    generations = generate_with_status(model, tiny_tokenizer, prompts, torch.ones_like(prompts), GenerationConfig(max_new_tokens=3))
    assert generations.texts == ["7", "797", ""]
    assert generations.finished == [True, False, True]
    assert generations.lengths == [2, 3, 1], "up to and with the end of turn; a cut one all of max_new_tokens"
