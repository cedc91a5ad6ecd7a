/* Vector quantiser behaviour: nearest codeword and ties, k-means init, EMA values, dead codes, modes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "testing.h"
#include "vq.h"

TEST(vq_assign_nearest_lowest_index_on_ties) {
    float e[3 * 2] = {0, 0, 1, 0, 1, 0}; /* codes 1 and 2 identical */
    float x[4 * 2] = {0.9f, 0.1f, 0.1f, 0, 0.5f, 0, 5, 5};
    int ind[4];
    vq_assign(e, 3, 2, 4, x, ind);
    CHECK(ind[0] == 1, "row 0 -> %d, want 1 (lowest of the tied codes 1, 2)", ind[0]);
    CHECK(ind[1] == 0, "row 1 -> %d", ind[1]);
    CHECK(ind[2] == 0, "row 2 at equal distance to 0 and 1 -> %d, want 0", ind[2]);
    CHECK(ind[3] == 1, "row 3 -> %d", ind[3]);
    return 0;
}

TEST(vq_kmeans_init_finds_cluster_means) {
    int K = 3, d = 2, N = 30;
    float *x = falloc((size_t)N * d);
    float centre[3][2] = {{-5, 0}, {5, 0}, {0, 8}};
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < N; i++)
        for (int t = 0; t < d; t++) x[i * d + t] = centre[i % 3][t] + (float)(0.1 * rng_normal(&r));
    VQ vq;
    vq_init(&vq, K, d, 0.98f, 0, 10);
    Rng kr;
    rng_seed(&kr, 7);
    vq_kmeans_init(&vq, N, x, &kr);
    int found = 0;
    for (int c = 0; c < 3; c++) {
        double mean[2] = {0, 0};
        for (int i = c; i < N; i += 3)
            for (int t = 0; t < d; t++) mean[t] += x[i * d + t] / 10.0;
        for (int k = 0; k < K; k++)
            if (fabs(vq.embed[k * d] - mean[0]) < 1e-5 && fabs(vq.embed[k * d + 1] - mean[1]) < 1e-5) {
                found++;
                CHECK(vq.cluster_size[k] == 10, "cluster_size %g want 10", vq.cluster_size[k]);
                CHECK(fabs(vq.embed_avg[k * d] - 10 * mean[0]) < 1e-4, "embed_avg not means*counts");
            }
    }
    CHECK(vq.initted == 1.0f, "initted flag not set");
    vq_free(&vq);
    ffree(x);
    CHECK(found == 3, "k-means found %d of 3 cluster means", found);
    return 0;
}

TEST(vq_ema_update_values_match_formula) {
    int K = 3, d = 2, N = 4;
    VQ vq;
    vq_init(&vq, K, d, 0.9f, 0, 10);
    float emb[6] = {0, 0, 1, 1, 5, 5}, ea[6] = {0.1f, 0.2f, 2, 2, 10, 10}, cs[3] = {1, 2, 3};
    memcpy(vq.embed, emb, sizeof emb);
    memcpy(vq.embed_avg, ea, sizeof ea);
    memcpy(vq.cluster_size, cs, sizeof cs);
    vq.initted = 1;
    float x[8] = {0.1f, 0, 0.9f, 1.1f, 1.2f, 0.8f, 0, 0.2f};
    int ind[4] = {0, 1, 1, 0};
    Rng r;
    rng_seed(&r, 1);
    vq_ema_update(&vq, N, x, ind, &r);
    double c[3] = {2, 2, 0}, s[3][2] = {{0.1, 0.2}, {2.1, 1.9}, {0, 0}};
    double CS[3], EA[3][2], tot = 0;
    for (int k = 0; k < 3; k++) {
        CS[k] = 0.9 * cs[k] + 0.1 * c[k];
        tot += CS[k];
        for (int t = 0; t < 2; t++) EA[k][t] = 0.9 * ea[k * 2 + t] + 0.1 * s[k][t];
    }
    for (int k = 0; k < 3; k++) {
        double nk = (CS[k] + 1e-5) / (tot + 3e-5) * tot;
        CHECK(fabs(vq.cluster_size[k] - CS[k]) < 1e-6, "cluster_size[%d] %.7f want %.7f", k, vq.cluster_size[k], CS[k]);
        for (int t = 0; t < 2; t++) {
            CHECK(fabs(vq.embed_avg[k * 2 + t] - EA[k][t]) < 1e-6, "embed_avg[%d][%d]", k, t);
            CHECK(fabs(vq.embed[k * 2 + t] - EA[k][t] / nk) < 1e-5, "embed[%d][%d] %.7f want %.7f", k, t,
                  vq.embed[k * 2 + t], EA[k][t] / nk);
        }
    }
    vq_free(&vq);
    return 0;
}

TEST(vq_dead_code_replaced_from_batch_and_reset) {
    int K = 3, d = 2, N = 6;
    VQ vq;
    vq_init(&vq, K, d, 0.5f, 2.0f, 10);
    float emb[6] = {0, 0, 1, 1, 50, 50};
    memcpy(vq.embed, emb, sizeof emb);
    for (int k = 0; k < 6; k++) vq.embed_avg[k] = emb[k] * 4;
    vq.cluster_size[0] = vq.cluster_size[1] = 4;
    vq.cluster_size[2] = 1; /* after decay 0.5 with no hits: 0.5 < T = 2 -> dead */
    vq.initted = 1;
    float x[12] = {0, 0.1f, 0.1f, 0, 1, 1.1f, 0.9f, 1, 0.2f, 0.2f, 1.1f, 0.9f};
    int ind[6];
    vq_assign(vq.embed, K, d, N, x, ind);
    Rng r;
    rng_seed(&r, 2);
    vq_ema_update(&vq, N, x, ind, &r);
    int from_batch = 0;
    for (int i = 0; i < N; i++)
        from_batch |= vq.embed[4] == x[i * 2] && vq.embed[5] == x[i * 2 + 1];
    CHECK(from_batch, "dead code 2 = (%g, %g) is not a row of the batch", vq.embed[4], vq.embed[5]);
    CHECK(vq.cluster_size[2] == 2.0f, "dead code cluster_size %g, want the threshold 2", vq.cluster_size[2]);
    CHECK(vq.embed_avg[4] == 2.0f * vq.embed[4], "dead code embed_avg not reset to T*embed");
    CHECK(vq.cluster_size[0] >= 2.0f && vq.embed[0] < 1, "live code 0 was replaced");
    vq_free(&vq);
    return 0;
}

/* model_config.revive_from: largest. Every dead code restarts at a row of the live atom with the most rows, whose
 * count is then halved; rows are distinct; revive_from: batch is the library's draw, bit for bit. */
TEST(vq_revive_rows_from_the_largest_atom) {
    /* counts: atom 0: 2 (dead), atom 1: 6, atom 2: 4, atom 3: 0 (dead) */
    const int N = 12, K = 4, ind[12] = {1, 0, 2, 1, 1, 2, 0, 1, 2, 1, 2, 1}, dead[2] = {3, 0};
    int seen1[12] = {0}, seen2[12] = {0};
    for (uint64_t seed = 0; seed < 300; seed++) {
        Rng r;
        rng_seed(&r, seed);
        int rows[2] = {-1, -1};
        vq_revive_rows(N, 2, dead, ind, K, 1, rows, &r);
        /* the first goes to atom 1 (6 rows); its count halves to 3, so the second goes to atom 2 (4 rows) */
        CHECK(rows[0] >= 0 && rows[0] < N && ind[rows[0]] == 1, "seed %d: first row %d (atom %d), want atom 1",
              (int)seed, rows[0], rows[0] >= 0 && rows[0] < N ? ind[rows[0]] : -1);
        CHECK(rows[1] >= 0 && rows[1] < N && ind[rows[1]] == 2, "seed %d: second row %d (atom %d), want atom 2",
              (int)seed, rows[1], rows[1] >= 0 && rows[1] < N ? ind[rows[1]] : -1);
        seen1[rows[0]]++, seen2[rows[1]]++;
    }
    for (int i = 0; i < N; i++) {
        CHECK(ind[i] != 1 || seen1[i] > 0, "row %d of atom 1 never drawn in 300 seeds", i);
        CHECK(ind[i] != 2 || seen2[i] > 0, "row %d of atom 2 never drawn in 300 seeds", i);
    }
    /* one atom left alive: rows are distinct, and once its rows are used up any unused row is drawn */
    const int ind1[4] = {2, 2, 0, 1}, dead3[3] = {0, 1, 3};
    for (uint64_t seed = 0; seed < 50; seed++) {
        Rng r;
        rng_seed(&r, seed);
        int rows[3];
        vq_revive_rows(4, 3, dead3, ind1, 4, 1, rows, &r);
        CHECK(ind1[rows[0]] == 2 && ind1[rows[1]] == 2 && rows[0] != rows[1], "seed %d: rows %d %d not both of atom 2",
              (int)seed, rows[0], rows[1]);
        CHECK(rows[2] >= 2 && rows[2] < 4, "seed %d: third row %d, want an unused row (2 or 3)", (int)seed, rows[2]);
    }
    /* revive_from: batch is vq_sample_rows on the same generator */
    Rng a, b;
    rng_seed(&a, 9);
    rng_seed(&b, 9);
    int ra[2], rb[2];
    vq_revive_rows(N, 2, dead, ind, K, 0, ra, &a);
    vq_sample_rows(N, 2, rb, &b);
    CHECK(ra[0] == rb[0] && ra[1] == rb[1] && rng_below(&a, 1000) == rng_below(&b, 1000),
          "revive_from batch is not the library draw");
    return 0;
}

/* The EMA update with revive_largest: the dead code takes a row of the batch's largest atom. */
TEST(vq_dead_code_revived_inside_the_largest_atom) {
    int K = 3, d = 2, N = 6;
    for (uint64_t seed = 0; seed < 20; seed++) {
        VQ vq;
        vq_init(&vq, K, d, 0.5f, 2.0f, 10);
        vq.revive_largest = 1;
        float emb[6] = {0, 0, 1, 1, 50, 50};
        memcpy(vq.embed, emb, sizeof emb);
        for (int k = 0; k < 6; k++) vq.embed_avg[k] = emb[k] * 4;
        vq.cluster_size[0] = vq.cluster_size[1] = 4;
        vq.cluster_size[2] = 1;
        vq.initted = 1;
        /* four rows near code 1, two near code 0 */
        float x[12] = {0, 0.1f, 1, 1.1f, 0.9f, 1, 1.2f, 0.8f, 0.1f, 0, 1.1f, 0.9f};
        int ind[6];
        vq_assign(vq.embed, K, d, N, x, ind);
        Rng r;
        rng_seed(&r, seed);
        vq_ema_update(&vq, N, x, ind, &r);
        int row = -1;
        for (int i = 0; i < N; i++)
            if (vq.embed[4] == x[i * 2] && vq.embed[5] == x[i * 2 + 1]) row = i;
        CHECK(row >= 0 && ind[row] == 1, "seed %d: dead code 2 = (%g, %g) is not a row of atom 1 (row %d)", (int)seed,
              vq.embed[4], vq.embed[5], row);
        CHECK(vq.cluster_size[2] == 2.0f, "dead code cluster_size %g, want the threshold 2", vq.cluster_size[2]);
        vq_free(&vq);
    }
    return 0;
}

TEST(vq_forward_modes_commit_and_no_update_in_eval) {
    int K = 2, d = 3, N = 4;
    float x[12];
    fill_uniform(x, 12, 9, -1, 1);
    VQ vq;
    vq_init(&vq, K, d, 0.9f, 0, 10);
    Rng r;
    rng_seed(&r, 4);
    float q[12];
    int ind[4];
    poison(q, 12);
    vq_forward(&vq, N, x, q, ind, VQ_EVAL, &r); /* first call initialises by k-means, even in eval */
    CHECK(vq.initted == 1.0f, "k-means init did not run on the first (eval) call");
    float before[6];
    memcpy(before, vq.embed, sizeof before);
    double c_eval = vq_forward(&vq, N, x, q, ind, VQ_EVAL, &r);
    CHECK(c_eval == 0.0, "eval commit %.3g, want 0", c_eval);
    CHECK(!memcmp(before, vq.embed, sizeof before), "eval changed the codebook");
    double c_frozen = vq_forward(&vq, N, x, q, ind, VQ_FROZEN, &r);
    CHECK(!memcmp(before, vq.embed, sizeof before), "frozen mode changed the codebook");
    double want = 0;
    for (int i = 0; i < N; i++)
        for (int t = 0; t < d; t++) {
            CHECK(q[i * d + t] == before[ind[i] * d + t], "q is not embed[ind]");
            want += (q[i * d + t] - x[i * d + t]) * (double)(q[i * d + t] - x[i * d + t]);
        }
    CHECK(fabs(c_frozen - want / (N * d)) < 1e-6 * want, "commit %.9g want %.9g", c_frozen, want / (N * d));
    /* train: q uses the codebook before the update, and the update happens */
    float x2[12];
    fill_uniform(x2, 12, 10, 2, 3);
    double c_train = vq_forward(&vq, N, x2, q, ind, VQ_TRAIN, &r);
    for (int t = 0; t < d; t++) CHECK(q[t] == before[ind[0] * d + t], "train q not from the pre-update codebook");
    CHECK(memcmp(before, vq.embed, sizeof before) != 0 && c_train > 0, "train mode did not update the codebook");
    vq_free(&vq);
    return 0;
}
