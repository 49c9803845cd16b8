// The Node client's main paths against a node. One run plays several scenarios in
// order (starting node and the client library costs seconds on a busy machine):
//   node client_paths.js '[["crud"], ["database", "db2"], ...]'
// The project comes from DATASTORE_PROJECT_ID and the address from
// DATASTORE_EMULATOR_HOST. Prints one JSON line mapping "name arg..." to what the
// scenario observed, or to {"error": ..., "code": ...} when it threw.
const {Datastore} = require('@google-cloud/datastore');

function keyPath(key) {
  return key.path;
}

const scenarios = {
  // save, get (one and many), update, delete, get of missing keys.
  async crud() {
    const ds = new Datastore();
    const a = ds.key(['Task', 'a']);
    const b = ds.key(['Task', 'b']);
    await ds.save([
      {key: a, data: {n: 1, s: 'zürich', f: 1.5}},
      {key: ds.key(['Task', 'big']), data: {big: ds.int('9007199254740993')}},
      {key: b, data: {n: 2, tags: ['x', 'y'], when: new Date('2020-01-02T03:04:05.678Z')}},
    ]);
    const [one] = await ds.get(a);
    const [wrapped] = await ds.get(ds.key(['Task', 'big']), {wrapNumbers: true}); // > 2**53
    const [many] = await ds.get([a, b, ds.key(['Task', 'missing'])]);
    await ds.save({key: a, data: {n: 10}});
    const [updated] = await ds.get(a);
    await ds.delete(b);
    const [afterDelete] = await ds.get(b);
    return {
      one: {n: one.n, s: one.s, f: one.f, big: wrapped.big.value, path: keyPath(one[ds.KEY])},
      many: many.map((e) => e[ds.KEY].name).sort(),
      when: many.find((e) => e[ds.KEY].name === 'b').when.toISOString(),
      updated,
      deleted: afterDelete === undefined,
    };
  },

  // An auto id from save, then allocateIds: all distinct.
  async ids() {
    const ds = new Datastore();
    const entity = {key: ds.key('Auto'), data: {x: 1}};
    await ds.save(entity);
    const [keys] = await ds.allocateIds(ds.key('Auto'), 5);
    const ids = keys.map((k) => k.id);
    return {saved: entity.key.id, allocated: ids, distinct: new Set([...ids, entity.key.id]).size};
  },

  // Mixed complete and incomplete keys in one save: ids land on the right entities.
  async mixed() {
    const ds = new Datastore();
    const entities = [];
    for (let i = 0; i < 6; i++) {
      const key = i % 2 ? ds.key(['Mixed', `n${i}`]) : ds.key('Mixed');
      entities.push({key, data: {i}});
    }
    await ds.save(entities);
    const [got] = await ds.get(entities.map((e) => e.key));
    const byI = {};
    for (const e of got) byI[e.i] = e[ds.KEY].id || e[ds.KEY].name;
    return {assigned: entities.map((e) => e.key.id || e.key.name), stored: byI};
  },

  // transaction.run / get / save / commit, then a rolled-back one.
  async transaction() {
    const ds = new Datastore();
    const key = ds.key(['Account', 'acc']);
    await ds.save({key, data: {balance: 100}});
    const txn = ds.transaction();
    await txn.run();
    const [acc] = await txn.get(key);
    acc.balance -= 30;
    txn.save({key, data: acc});
    await txn.commit();
    const [afterCommit] = await ds.get(key);

    const rolled = ds.transaction();
    await rolled.run();
    rolled.save({key, data: {balance: 0}});
    await rolled.rollback();
    const [afterRollback] = await ds.get(key);
    return {afterCommit: afterCommit.balance, afterRollback: afterRollback.balance};
  },

  // Two transactions read and write the same entity: the second commit is aborted.
  async conflict() {
    const ds = new Datastore();
    const key = ds.key(['Account', 'contended']);
    await ds.save({key, data: {n: 0}});
    const t1 = ds.transaction();
    const t2 = ds.transaction();
    await t1.run();
    await t2.run();
    await t1.get(key);
    await t2.get(key);
    t1.save({key, data: {n: 1}});
    t2.save({key, data: {n: 2}});
    await t1.commit();
    let code = null;
    try {
      await t2.commit();
    } catch (err) {
      code = err.code;
    }
    const [final] = await ds.get(key);
    return {code, final: final.n};
  },

  // insert of an existing entity: ALREADY_EXISTS is err.code 6; update of a missing
  // one: NOT_FOUND, err.code 5.
  async errors() {
    const ds = new Datastore();
    const key = ds.key(['Unique', 'u']);
    await ds.insert({key, data: {v: 1}});
    const codes = {};
    try {
      await ds.insert({key, data: {v: 2}});
    } catch (err) {
      codes.insert = err.code;
      codes.insertMessage = err.details || err.message;
    }
    try {
      await ds.update({key: ds.key(['Unique', 'nobody']), data: {v: 1}});
    } catch (err) {
      codes.update = err.code;
    }
    const [stored] = await ds.get(key);
    return {...codes, stored: stored.v};
  },

  // A named database (keys carry no database: only the request does).
  async database(name) {
    const named = new Datastore({databaseId: name});
    const key = named.key(['Doc', 'd']);
    await named.save({key, data: {where: name}});
    const [inNamed] = await named.get(key);
    const [inDefault] = await new Datastore().get(key);
    return {inNamed: inNamed.where, inDefault: inDefault === undefined};
  },

  // Write an entity (namespace and database given) for Python to read.
  async write(database, namespace) {
    const ds = new Datastore({databaseId: database || undefined, namespace: namespace || undefined});
    const parent = ds.key(['Owner', 'o1']);
    await ds.save({
      key: ds.key(['Owner', 'o1', 'Pet', 'rex']),
      data: {name: 'Rex', owner: parent, legs: 4, weight: ds.double(12), at: new Date(0)},
    });
    return {ok: true};
  },

  // Read what Python wrote.
  async read(database, namespace, kind, name) {
    const ds = new Datastore({databaseId: database || undefined, namespace: namespace || undefined});
    const [entity] = await ds.get(ds.key([kind, name]));
    if (!entity) return {found: false};
    const out = {found: true};
    for (const [k, v] of Object.entries(entity)) {
      out[k] = v && v[ds.KEY] === undefined && typeof v === 'object' && v.path ? v.path : v;
    }
    return out;
  },

  // Large results: a get of 5 x 900 KB (the server defers some keys, the client loops)
  // and a query of 700 entities (several NOT_FINISHED batches).
  async large() {
    const ds = new Datastore();
    const blob = Buffer.alloc(900000, 7);
    const big = [1, 2, 3, 4, 5].map((i) => ({
      key: ds.key(['Large', i]),
      data: {blob},
      excludeFromIndexes: ['blob'],
    }));
    await ds.save(big.slice(0, 2));
    await ds.save(big.slice(2));
    const [got] = await ds.get(big.map((e) => e.key));
    const rows = [];
    for (let start = 0; start < 700; start += 350) {
      const batch = [];
      for (let i = start + 1; i <= start + 350; i++) batch.push({key: ds.key(['Bulk', i]), data: {i}});
      await ds.save(batch);
    }
    const [all] = await ds.runQuery(ds.createQuery('Bulk'));
    for (const e of all) rows.push(e.i);
    return {got: got.length, bytes: got.reduce((n, e) => n + e.blob.length, 0), rows: rows.length,
      sorted: rows.every((v, i) => v === i + 1)};
  },

  // A kind query (only when the query engine serves queries).
  async query() {
    const ds = new Datastore();
    await ds.save([1, 2, 3, 4].map((i) => ({key: ds.key(['Q', i]), data: {i, even: i % 2 === 0}})));
    const [rows] = await ds.runQuery(ds.createQuery('Q').filter('even', '=', true).order('i'));
    return {rows: rows.map((r) => r.i)};
  },
};

async function main() {
  const out = {};
  for (const [name, ...args] of JSON.parse(process.argv[2])) {
    const label = [name, ...args].join(' ');
    try {
      out[label] = await scenarios[name](...args);
    } catch (err) {
      out[label] = {error: String(err && err.stack ? err.stack : err), code: err && err.code};
    }
  }
  return out;
}

main()
  .then((result) => console.log(JSON.stringify(result)))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
