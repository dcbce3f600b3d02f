'use strict';
// The orders app's data: in memory, seeded with the same three orders as the adoption test's Python
// service (tests/adopt/orders_service.py), as if both read one database.
const SEED = [
  { id: 1, item: 'book', qty: 2, status: 'shipped' },
  { id: 2, item: 'lamp', qty: 1, status: 'open' },
  { id: 3, item: 'desk', qty: 1, status: 'open' },
];

function createStore() {
  const orders = new Map(SEED.map((o) => [o.id, { ...o }]));
  let nextId = SEED.length + 1;
  return {
    list: () => [...orders.values()],
    get: (id) => orders.get(id),
    create: ({ item, qty }) => {
      const order = { id: nextId++, item: String(item), qty: Number(qty) || 1, status: 'open' };
      orders.set(order.id, order);
      return order;
    },
  };
}

module.exports = { createStore };
