// The official Java client (google-cloud-datastore, its default HTTP transport),
// unmodified: the seed document's write-then-read of a User, a filtered query, a
// transaction, and the error an insert of an existing entity gets. The address comes from DATASTORE_EMULATOR_HOST and the project from
// DATASTORE_PROJECT_ID, as for every official client. Prints one JSON line mapping each
// scenario to what it observed, or to {"error": ...} when the scenario failed.
package zonestore;

import com.google.cloud.datastore.Datastore;
import com.google.cloud.datastore.DatastoreException;
import com.google.cloud.datastore.DatastoreOptions;
import com.google.cloud.datastore.Entity;
import com.google.cloud.datastore.Key;
import com.google.cloud.datastore.Query;
import com.google.cloud.datastore.QueryResults;
import com.google.cloud.datastore.StructuredQuery.OrderBy;
import com.google.cloud.datastore.StructuredQuery.PropertyFilter;
import com.google.cloud.datastore.Transaction;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

public final class ClientPaths {
  private ClientPaths() {}

  /** The seed's User, keyed by name, written then read back. */
  static String seed(Datastore ds) {
    Key key = ds.newKeyFactory().setKind("User").newKey("John Doe");
    ds.put(
        Entity.newBuilder(key)
            .set("name", "John Doe")
            .set("email", "john.doe@example.com")
            .build());
    Entity got = ds.get(key);
    return "{\"name\":" + quote(got.getString("name")) + ",\"email\":"
        + quote(got.getString("email")) + "}";
  }

  /** Four tasks, then the even ones in order. */
  static String query(Datastore ds) {
    List<Entity> tasks = new ArrayList<>();
    for (long i = 1; i <= 4; i++) {
      Key key = ds.newKeyFactory().setKind("Task").newKey(i);
      tasks.add(Entity.newBuilder(key).set("i", i).set("even", i % 2 == 0).build());
    }
    ds.put(tasks.toArray(new Entity[0]));
    Query<Entity> q =
        Query.newEntityQueryBuilder()
            .setKind("Task")
            .setFilter(PropertyFilter.eq("even", true))
            .setOrderBy(OrderBy.asc("i"))
            .build();
    List<String> rows = new ArrayList<>();
    QueryResults<Entity> results = ds.run(q);
    while (results.hasNext()) {
      rows.add(Long.toString(results.next().getLong("i")));
    }
    return "{\"rows\":[" + String.join(",", rows) + "]}";
  }

  /** 30 out of 100 in a committed transaction, then 0 written in a rolled-back one. */
  static String transaction(Datastore ds) {
    Key key = ds.newKeyFactory().setKind("Account").newKey("acc");
    ds.put(Entity.newBuilder(key).set("balance", 100L).build());
    ds.runInTransaction(
        tx -> {
          Entity acc = tx.get(key);
          tx.put(Entity.newBuilder(acc).set("balance", acc.getLong("balance") - 30).build());
          return null;
        });
    long afterCommit = ds.get(key).getLong("balance");
    Transaction rolled = ds.newTransaction();
    rolled.put(Entity.newBuilder(key).set("balance", 0L).build());
    rolled.rollback();
    long afterRollback = ds.get(key).getLong("balance");
    return "{\"afterCommit\":" + afterCommit + ",\"afterRollback\":" + afterRollback + "}";
  }

  /** An insert of an existing entity: what the client reports (code, reason). */
  static String errors(Datastore ds) {
    Key key = ds.newKeyFactory().setKind("Unique").newKey("u");
    ds.put(Entity.newBuilder(key).set("v", 1L).build());
    try {
      ds.add(Entity.newBuilder(key).set("v", 2L).build());
      return "{\"insert\":\"succeeded\"}";
    } catch (DatastoreException e) {
      return "{\"code\":" + e.getCode() + ",\"reason\":" + quote(String.valueOf(e.getReason()))
          + ",\"message\":" + quote(String.valueOf(e.getMessage())) + "}";
    }
  }

  static String quote(String s) {
    StringBuilder out = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') {
        out.append('\\').append(c);
      } else if (c < 0x20) {
        out.append(String.format("\\u%04x", (int) c));
      } else {
        out.append(c);
      }
    }
    return out.append('"').toString();
  }

  static String run(Callable<String> scenario) {
    try {
      return scenario.call();
    } catch (Exception e) {
      return "{\"error\":" + quote(e.getClass().getName() + ": " + e.getMessage()) + "}";
    }
  }

  public static void main(String[] args) {
    Datastore ds =
        DatastoreOptions.newBuilder()
            .setProjectId(System.getenv("DATASTORE_PROJECT_ID"))
            .build()
            .getService();
    Map<String, String> out = new LinkedHashMap<>();
    out.put("seed", run(() -> seed(ds)));
    out.put("query", run(() -> query(ds)));
    out.put("transaction", run(() -> transaction(ds)));
    out.put("errors", run(() -> errors(ds)));
    out.put("transport", quote(ds.getOptions().getTransportOptions().getClass().getSimpleName()));
    List<String> fields = new ArrayList<>();
    out.forEach((k, v) -> fields.add(quote(k) + ":" + v));
    System.out.println("{" + String.join(",", fields) + "}");
  }
}
