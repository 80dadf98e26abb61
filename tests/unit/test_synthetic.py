import numpy as np

from tfrec.data import inputs, schema


def hit_rate_at_10(scores_fn, histories, targets, num_items):
    hits = 0
    for h, t in zip(histories, targets):
        s = scores_fn(h).astype(np.float64)
        s[:schema.NUM_ITEM_RESERVED] = -np.inf
        s[h] = -np.inf                      # items of the history are excluded
        top = np.argsort(-s, kind="stable")[:10]
        hits += int(t in top)
    return hits / len(targets)


def test_planted_sequence_structure_beats_popularity(synthetic_prepared):
    """A first-order Markov model fitted on train beats popularity on the test split."""
    d = synthetic_prepared
    n = len(d.item_vocab)
    _, seqs = inputs.loo_sequences(d, schema.TRAIN)
    pop = np.bincount(np.concatenate(seqs), minlength=n).astype(np.float64)
    trans = np.zeros((n, n))
    for s in seqs:
        np.add.at(trans, (s[:-1], s[1:]), 1.0)
    test = inputs.loo_sequences(d, schema.TEST)
    hr_pop = hit_rate_at_10(lambda h: pop.copy(), test.histories, test.targets, n)
    hr_markov = hit_rate_at_10(lambda h: trans[h[-1]] + 1e-6 * pop, test.histories, test.targets, n)
    assert hr_markov > hr_pop + 0.2, (hr_markov, hr_pop)


def test_features_agree_with_clusters(synthetic_raw):
    items = synthetic_raw.items.set_index(schema.ITEM_ID)
    inter = synthetic_raw.interactions
    # a user's items mostly share one category: the planted cluster
    share = inter.assign(cat=items.loc[inter[schema.ITEM_ID], "category"].to_numpy()).groupby(schema.USER_ID)["cat"].agg(
        lambda c: c.value_counts(normalize=True).iloc[0])
    assert share.mean() > 0.6
