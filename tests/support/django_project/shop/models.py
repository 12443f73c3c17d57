"""One model, so that transactions have rows to commit or roll back."""

from django.db import models


class Order(models.Model):
    """An order; emitting ``order.created`` goes with its row."""

    item = models.CharField(max_length=100)
