"""Properties of the ranking losses that must hold for *every* input, checked with hypothesis.

Each property is checked against something the vectorised code does not share: Breslow's rule written out group by
group in Python floats, a closed form, brute-force enumeration of the K! orderings, or the same loss reached by a
different path (a smaller problem, a permuted one, ``dpo_loss``). Shapes: a problem is one row, (1, K), K <= 6 so
that enumeration stays cheap.

Examples are derandomized (seeded from the test's source) and the example database is off, so that every run, on
every machine, checks the same inputs, like the rest of the suite's fixed seeds; a failure still prints the shrunk
falsifying example. (Hypothesis still caches source constants under ``.hypothesis/``, which it git-ignores itself.)
"""

import itertools
import math

import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

from dpo_ext.losses import dpo_loss, plackett_luce_loss

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)

# Log-probabilities of real sequences: a few thousand tokens at a few nats each reach -1e4; 1e6 leaves headroom and
# keeps beta * (policy - ref) far from float32 overflow.
LOGPS = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
BETAS = st.floats(1e-3, 10.0, allow_nan=False)
DTYPES = st.sampled_from([torch.bfloat16, torch.float32, torch.float64])


# ----------------------------------------------------------------------------------------------------------------
# Independent references, in Python floats (float64)
# ----------------------------------------------------------------------------------------------------------------


def _logsumexp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _breslow_nll(rewards, ranks):
    """Breslow's rule group by group: for every rank group G but the worst, with R the slots ranked G or worse,
    add -(sum_{i in G} r_i - |G| * logsumexp_{j in R} r_j). Negative ranks are ignored. Uses only the order of ranks.
    """
    present = [i for i, r in enumerate(ranks) if r >= 0]
    groups = sorted({ranks[i] for i in present})
    nll = 0.0
    for g in groups[:-1]:
        members = [rewards[i] for i in present if ranks[i] == g]
        at_risk = [rewards[i] for i in present if ranks[i] >= g]
        nll -= sum(members) - len(members) * _logsumexp(at_risk)
    return nll


def _dense(ranks):
    """The dense form of integer ranks: present values renumbered 0, 1, ... in order; every missing slot -1."""
    levels = sorted({r for r in ranks if r >= 0})
    return [levels.index(r) if r >= 0 else -1 for r in ranks]


def _rewards(policy, ref, beta):
    return [beta * (p - q) for p, q in zip(policy, ref)]


def _atol(policy, ref, beta, rel=1e-11):
    """Absolute tolerance of a float64 comparison: the loss subtracts log-sum-exps of rewards as large as
    beta * |log-prob|, so summing in another order moves it by a few ulps of the largest reward, not of the loss."""
    return rel * (1.0 + sum(abs(r) for r in _rewards(policy, ref, beta)))


def _row(values, dtype=torch.float64, requires_grad=False):
    """One problem as a (1, K) tensor."""
    return torch.tensor([values], dtype=dtype, requires_grad=requires_grad)


def _loss_and_grad(policy, ref, beta, ranks, dtype=torch.float64):
    """Loss (a Python float) and d loss / d policy, (K,), of one row."""
    policy = _row(policy, dtype, requires_grad=True)
    ranks = None if ranks is None else torch.tensor([ranks])
    loss = plackett_luce_loss(policy, _row(ref, dtype), beta, ranks)
    loss.sum().backward()
    return loss.item(), policy.grad[0]


# ----------------------------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------------------------


@st.composite
def problems(draw, min_k=2, max_k=6, missing=True):
    """(policy, ref, beta, ranks) for one row of K completions: ranks in [-1, K-1], so ties and missing slots.

    The scale of the log-probs is drawn per row: up to 1e6 to exercise saturation, up to 20 so that every slot
    visibly moves the loss (at 1e6 the rewards are so far apart that a wrongly dropped slot can hide in rounding).
    """
    k = draw(st.integers(min_k, max_k))
    bound = draw(st.sampled_from([20.0, 1e6]))
    logps = st.floats(-bound, bound)
    policy = draw(st.lists(logps, min_size=k, max_size=k))
    ref = draw(st.lists(logps, min_size=k, max_size=k))
    ranks = draw(st.lists(st.integers(-1 if missing else 0, k - 1), min_size=k, max_size=k))
    return policy, ref, draw(BETAS), ranks


@st.composite
def increasing_maps(draw, size):
    """``size`` (<= 16) strictly increasing non-negative rank values, from gaps: small ones so that values land on
    K + 1 and its neighbours, huge ones so that they reach the int64 range (16 gaps of 2**59 stay below 2**63)."""
    gaps = st.integers(1, 3) | st.integers(1, 2**59)
    values = [draw(st.integers(0, 3))]
    for _ in range(size - 1):
        values.append(values[-1] + draw(gaps))
    return values


# ----------------------------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------------------------


@FAST
@given(problems(), DTYPES)
def test_finite_nonnegative_loss_and_finite_gradient_for_any_finite_input(problem, dtype):
    """(a) Any finite log-probs, bf16 to float64: a finite loss >= 0 (it is minus a log-probability), finite gradients,
    the documented output dtype, and the float64 Breslow value of the inputs as given (bf16-rounded included)."""
    policy, ref, beta, ranks = problem
    policy_t = _row(policy, dtype, requires_grad=True)
    ref_t = _row(ref, dtype, requires_grad=True)
    loss = plackett_luce_loss(policy_t, ref_t, beta, torch.tensor([ranks]))
    loss.sum().backward()
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.isfinite(loss).all() and (loss >= 0).all()
    assert torch.isfinite(policy_t.grad).all() and torch.isfinite(ref_t.grad).all()

    rewards = _rewards(policy_t.detach()[0].double().tolist(), ref_t.detach()[0].double().tolist(), beta)
    expected = _breslow_nll(rewards, ranks)
    # float32 compute: each reward and log-sum-exp is off by a few 2**-24 of the largest reward, over <= K - 1 terms
    scale = 1.0 + sum(abs(r) for r in rewards)
    atol = 1e-12 * scale if dtype == torch.float64 else 4e-6 * scale
    assert abs(loss.item() - expected) <= atol, (loss.item(), expected)


@FAST
@given(problems(), st.data())
def test_invariant_to_permuting_completions_with_their_ranks(problem, data):
    """(b) Column order carries no meaning: permuting the K completions together with their ranks permutes the
    gradient the same way and leaves the loss unchanged."""
    policy, ref, beta, ranks = problem
    perm = data.draw(st.permutations(range(len(policy))))
    loss, grad = _loss_and_grad(policy, ref, beta, ranks)
    permuted_loss, permuted_grad = _loss_and_grad(
        [policy[i] for i in perm], [ref[i] for i in perm], beta, [ranks[i] for i in perm]
    )
    atol = _atol(policy, ref, beta)
    torch.testing.assert_close(permuted_loss, loss, rtol=0, atol=atol)
    torch.testing.assert_close(permuted_grad, grad[list(perm)], rtol=0, atol=atol)


def _int64_ranks(data, k):
    """K rank values: small ones in [-2, K + 2], where ties, gaps and K + 1 (the sentinel an earlier version mistook
    for a missing slot) are common; in about half of the rows spread by a strictly increasing map up to the int64
    range, each missing slot given any negative int64."""
    ranks = data.draw(st.lists(st.integers(-2, k + 2), min_size=k, max_size=k), label="small ranks")
    if data.draw(st.booleans(), label="spread"):
        levels = data.draw(increasing_maps(k + 3))
        ranks = [levels[r] if r >= 0 else data.draw(st.integers(-(2**63), -1)) for r in ranks]
    return ranks


@FAST
@given(problems(), st.data())
def test_any_integer_ranks_equal_their_dense_form(problem, data):
    """(c) Only the order of rank values matters: any int64 ranks (values above K included) give the loss and the
    gradient of their dense form, and Breslow's loss."""
    policy, ref, beta, _ = problem
    ranks = _int64_ranks(data, len(policy))
    loss, grad = _loss_and_grad(policy, ref, beta, ranks)
    dense_loss, dense_grad = _loss_and_grad(policy, ref, beta, _dense(ranks))
    atol = _atol(policy, ref, beta)
    torch.testing.assert_close(loss, dense_loss, rtol=0, atol=atol)
    torch.testing.assert_close(grad, dense_grad, rtol=0, atol=atol)
    assert abs(loss - _breslow_nll(_rewards(policy, ref, beta), ranks)) <= atol


@FAST
@given(problems(min_k=1, missing=False), st.data())
def test_missing_slots_are_the_smaller_problem_and_get_zero_gradient(problem, data):
    """(d) Slots with a negative rank, holding any garbage (inf, NaN), give the loss of the problem with those slots
    removed, gradients equal to that problem's on the other slots and exactly zero on theirs."""
    policy, ref, beta, ranks = problem
    num_missing = data.draw(st.integers(1, 3))
    garbage = st.floats(allow_nan=True, allow_infinity=True)
    full_policy, full_ref, full_ranks = list(policy), list(ref), list(ranks)
    for _ in range(num_missing):
        at = data.draw(st.integers(0, len(full_policy)))
        full_policy.insert(at, data.draw(garbage))
        full_ref.insert(at, data.draw(garbage))
        full_ranks.insert(at, data.draw(st.integers(-(2**63), -1)))
    note(f"padded problem: policy {full_policy}, ref {full_ref}, ranks {full_ranks}")
    kept = [i for i, r in enumerate(full_ranks) if r >= 0]
    dropped = [i for i, r in enumerate(full_ranks) if r < 0]

    policy_t = _row(full_policy, requires_grad=True)
    ref_t = _row(full_ref, requires_grad=True)
    loss = plackett_luce_loss(policy_t, ref_t, beta, torch.tensor([full_ranks]))
    loss.sum().backward()
    small_loss, small_grad = _loss_and_grad(policy, ref, beta, ranks)

    atol = _atol(policy, ref, beta)
    torch.testing.assert_close(loss.item(), small_loss, rtol=0, atol=atol)
    torch.testing.assert_close(policy_t.grad[0, kept], small_grad, rtol=0, atol=atol)
    assert (policy_t.grad[0, dropped] == 0).all() and (ref_t.grad[0, dropped] == 0).all()
    assert abs(loss.item() - _breslow_nll(_rewards(policy, ref, beta), ranks)) <= atol


@FAST
@given(st.integers(2, 6).flatmap(lambda k: st.tuples(st.lists(LOGPS, min_size=k, max_size=k),
                                                      st.permutations(range(k)), increasing_maps(k))),
       BETAS, DTYPES)
def test_policy_equal_to_reference_gives_log_k_factorial(case, beta, dtype):
    """(e) With policy = reference every ranking of K distinct completions is equally likely: loss = log(K!),
    whatever the log-probs, the rank values or the input dtype."""
    logps, order, values = case
    ranks = [values[i] for i in order]
    loss = plackett_luce_loss(_row(logps, dtype), _row(logps, dtype), beta, torch.tensor([ranks]))
    assert math.isclose(loss.item(), math.lgamma(len(logps) + 1), rel_tol=1e-6)


@FAST
@given(problems(), DTYPES)
def test_policy_equal_to_reference_with_ties_and_missing_slots_counts_the_risk_sets(problem, dtype):
    """(e') Equal rewards with ties: Breslow's rule reduces to sum over all groups but the worst of |G| * log |R|,
    a count of completions only. For K distinct ranks this is log(K!) again."""
    logps, _, beta, ranks = problem
    present = [r for r in ranks if r >= 0]
    groups = sorted(set(present))
    expected = sum(present.count(g) * math.log(sum(r >= g for r in present)) for g in groups[:-1])
    loss = plackett_luce_loss(_row(logps, dtype), _row(logps, dtype), beta, torch.tensor([ranks]))
    assert math.isclose(loss.item(), expected, rel_tol=1e-6, abs_tol=1e-6)


@FAST
@given(st.lists(LOGPS, min_size=2, max_size=2), st.lists(LOGPS, min_size=2, max_size=2), BETAS,
       st.one_of(st.none(), st.lists(st.integers(0, 2**63 - 1), min_size=2, max_size=2, unique=True)))
def test_two_completions_is_sigmoid_dpo(policy, ref, beta, ranks):
    """(f) K = 2, any order of the two columns: the loss is dpo_loss of (better, worse) and, in closed form,
    -log sigmoid(m) = softplus(-m) with m the reward margin of the better one over the worse one."""
    better, worse = (0, 1) if ranks is None or ranks[0] < ranks[1] else (1, 0)
    margin = beta * ((policy[better] - ref[better]) - (policy[worse] - ref[worse]))
    softplus = max(-margin, 0.0) + math.log1p(math.exp(-abs(margin)))  # stable for any margin
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        p, q = _row(policy, dtype)[0], _row(ref, dtype)[0]
        loss = plackett_luce_loss(p[None], q[None], beta, None if ranks is None else torch.tensor([ranks]))
        expected = dpo_loss(p[better, None], p[worse, None], q[better, None], q[worse, None], beta)
        scale = 1.0 + beta * sum(abs(v) for v in policy + ref)  # absolute rounding of the rewards
        assert abs(loss.item() - expected.item()) <= tol * scale
        assert abs(loss.item() - softplus) <= tol * scale


@FAST
@given(problems(), st.floats(-1e6, 1e6, allow_nan=False))
def test_adding_a_constant_to_every_reward_of_a_row_changes_nothing(problem, shift):
    """(g) Plackett-Luce depends on reward differences only: shifting every policy log-prob of a row by the same
    amount leaves loss and gradient unchanged (up to the rounding of the shifted inputs)."""
    policy, ref, beta, ranks = problem
    loss, grad = _loss_and_grad(policy, ref, beta, ranks)
    shifted_loss, shifted_grad = _loss_and_grad([p + shift for p in policy], ref, beta, ranks)
    scale = 1.0 + beta * (abs(shift) + sum(abs(v) for v in policy + ref))
    assert abs(shifted_loss - loss) <= 1e-12 * scale
    torch.testing.assert_close(shifted_grad, grad, rtol=0, atol=1e-12 * scale)


@FAST
@given(problems(max_k=5))
def test_full_rankings_form_a_probability_distribution(problem):
    """(h) exp(-loss) over all K! tie-free rankings sums to one: it is a probability of the ranking. Checked on
    all K! rankings at once, one per row, in log space so that tiny probabilities do not underflow."""
    policy, ref, beta, _ = problem
    k = len(policy)
    orders = list(itertools.permutations(range(k)))
    ranks = torch.empty(len(orders), k, dtype=torch.long)  # (K!, K): row n ranks slot order[j] at j
    for n, order in enumerate(orders):
        ranks[n, list(order)] = torch.arange(k)
    loss = plackett_luce_loss(_row(policy).expand(len(orders), k), _row(ref).expand(len(orders), k), beta, ranks)
    assert abs(torch.logsumexp(-loss, dim=0).item()) <= _atol(policy, ref, beta)


@FAST
@given(st.integers(2, 5).flatmap(lambda k: st.tuples(st.lists(st.floats(-1e3, 1e3), min_size=k, max_size=k),
                                                      st.integers(1, k - 1), st.permutations(range(k)))),
       BETAS)
def test_tied_bottom_group_is_the_marginal_over_its_orders(case, beta):
    """(i) A top-m partial ranking (everything below the top m tied for last) has the probability of all the full
    rankings that extend it: exp(-loss) = sum over orders of the bottom group of exp(-full-ranking loss)."""
    logps, top, order = case
    k = len(logps)
    partial = [0] * k
    for position, slot in enumerate(order):  # order lists the slots best first
        partial[slot] = min(position, top)
    extensions = []
    for rest in itertools.permutations(order[top:]):
        full = [0] * k
        for position, slot in enumerate(list(order[:top]) + list(rest)):
            full[slot] = position
        extensions.append(full)
    ref = [0.0] * k
    partial_loss = plackett_luce_loss(_row(logps), _row(ref), beta, torch.tensor([partial]))
    full_losses = plackett_luce_loss(
        _row(logps).expand(len(extensions), k), _row(ref).expand(len(extensions), k), beta, torch.tensor(extensions)
    )
    marginal_loss = -torch.logsumexp(-full_losses, dim=0)
    torch.testing.assert_close(partial_loss[0], marginal_loss, rtol=0, atol=_atol(logps, ref, beta))
