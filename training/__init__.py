"""Meta-training of GPICL learners: data, tasks, learners, training loop and evaluation."""
