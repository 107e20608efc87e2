import random

import torch

from training.train import JOINED_PAUSE_S, with_joined


def test_joined_runs_are_utterances_with_pauses_between_and_their_tokens_in_order() -> None:
    audios = [torch.full((1600 + 10 * i,), float(i + 1)) for i in range(40)]  # each utterance its own value
    tokens = [[i, 100 + i] for i in range(40)]
    out_audios, out_tokens = with_joined((audios, tokens), random.Random(0), share=0.5)
    assert out_audios[:40] == audios and out_tokens[:40] == tokens  # every utterance still alone
    used = []
    for audio, ids in zip(out_audios[40:], out_tokens[40:], strict=True):
        run = ids[::2]
        assert 2 <= len(run) <= 3 and ids == [t for i in run for t in tokens[i]]
        speech = audio != 0
        assert [int(v) - 1 for v in torch.unique_consecutive(audio[speech])] == run  # its audio, in order
        gaps = len(audio) - int(speech.sum())
        assert (len(run) - 1) * JOINED_PAUSE_S[0] * 16000 <= gaps <= (len(run) - 1) * JOINED_PAUSE_S[1] * 16000 + 2
        used += run
    assert len(used) == len(set(used)) and 14 <= len(used) <= 20  # each in one run at most, about half
