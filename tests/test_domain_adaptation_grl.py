import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.domain_adaptation.grl import gradient_reversal, grl_schedule


def test_forward_is_identity_and_backward_is_minus_lambda_g():
    x = jnp.asarray([[1.0, -2.0], [3.0, 0.5]])
    lam = jnp.float32(0.3)
    np.testing.assert_array_equal(gradient_reversal(x, lam), x)
    w = jnp.asarray([[2.0, 1.0], [-1.0, 4.0]])
    plain = jax.grad(lambda x: jnp.sum(w * x**2))(x)
    reversed_ = jax.grad(lambda x: jnp.sum(w * gradient_reversal(x, lam) ** 2))(x)
    # The upstream gradient 2wx passes back through the GRL as -lam * 2wx.
    np.testing.assert_allclose(reversed_, -0.3 * plain, rtol=1e-6)
    # lambda gets no gradient: it is a fixed coupling, not a parameter.
    assert float(jax.grad(lambda s: jnp.sum(gradient_reversal(x, s)))(lam)) == 0.0


def test_grl_inside_a_chain_reverses_only_what_lies_before_it():
    # f(x) = d(GRL(e(x))): d/dtheta_d unchanged, d/dtheta_e reversed and scaled.
    def loss(params, lam):
        h = params["e"] * 2.0
        return jnp.sum(params["d"] * gradient_reversal(h, lam))

    params = {"e": jnp.asarray(1.5), "d": jnp.asarray(-0.7)}
    g1 = jax.grad(loss)(params, jnp.float32(1.0))
    g2 = jax.grad(loss)(params, jnp.float32(2.0))
    assert float(g1["d"]) == float(g2["d"]) == 3.0
    np.testing.assert_allclose([float(g1["e"]), float(g2["e"])], [1.4, 2.8], rtol=1e-6)


def test_schedule_values():
    p = np.asarray([0.0, 0.1, 0.5, 1.0, 2.0], np.float32)
    want = 2.0 / (1.0 + np.exp(-10.0 * np.clip(p, 0, 1))) - 1.0
    np.testing.assert_allclose(grl_schedule(p), want, rtol=1e-6)
    assert float(grl_schedule(0.0)) == 0.0 and 0.9999 < float(grl_schedule(1.0)) < 1.0
    assert np.all(np.diff(np.asarray(grl_schedule(np.linspace(0, 1, 11)))) > 0)


def test_a_jitted_step_compiles_once_over_a_schedule():
    traces = []

    @jax.jit
    def step(w, x, lam):
        traces.append(1)
        g = jax.grad(lambda w: jnp.sum(gradient_reversal(x * w, lam) ** 2))(w)
        return w - 0.1 * g

    w, x = jnp.ones(4), jnp.arange(4.0)
    grads = []
    for p in np.linspace(0.0, 1.0, 6):
        new_w = step(w, x, grl_schedule(p))
        grads.append(np.asarray(w - new_w) / 0.1)
    assert len(traces) == 1
    # The scale follows the schedule: the reversed gradient grows with lambda.
    norms = [np.linalg.norm(g) for g in grads]
    assert norms[0] == 0.0 and all(b > a for a, b in zip(norms, norms[1:]))
