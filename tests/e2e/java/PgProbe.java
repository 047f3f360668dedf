// A small pgJDBC client for dbward's end-to-end tests: prepared statements, batches, cursors
// and the DatabaseMetaData calls that DBeaver and DataGrip make when they browse a database.
// Usage: java -cp postgresql.jar PgProbe.java <port> <user> <password> <database>
import java.sql.*;

public class PgProbe {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/" + args[3]
                + "?sslmode=disable&ApplicationName=PgProbe&prepareThreshold=2";
        try (Connection c = DriverManager.getConnection(url, args[1], args[2])) {
            DatabaseMetaData md = c.getMetaData();
            System.out.println("product=" + md.getDatabaseProductName());
            try (ResultSet rs = md.getCatalogs()) {
                while (rs.next()) if (rs.getString(1).equals(args[3])) System.out.println("catalog=" + rs.getString(1));
            }
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) if (rs.getString(1).equals("public")) System.out.println("schema=public");
            }
            try (ResultSet rs = md.getTables(null, "public", "customers", new String[] {"TABLE"})) {
                while (rs.next()) System.out.println("table=" + rs.getString("TABLE_NAME"));
            }
            StringBuilder cols = new StringBuilder();
            try (ResultSet rs = md.getColumns(null, "public", "customers", "%")) {
                while (rs.next()) cols.append(rs.getString("COLUMN_NAME")).append(",");
            }
            System.out.println("columns=" + cols);
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "customers")) {
                while (rs.next()) System.out.println("pk=" + rs.getString("COLUMN_NAME"));
            }
            try (ResultSet rs = md.getIndexInfo(null, "public", "customers", false, false)) {
                while (rs.next()) System.out.println("index=" + rs.getString("INDEX_NAME"));
            }
            try (ResultSet rs = md.getTypeInfo()) {
                int n = 0;
                while (rs.next()) n++;
                System.out.println("types=" + (n > 10));
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT name FROM customers WHERE id = ?")) {
                StringBuilder names = new StringBuilder();
                for (int i = 1; i <= 3; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) names.append(rs.getString(1)).append("|");
                    }
                }
                System.out.println("names=" + names);
            }
            try (Statement st = c.createStatement()) {
                st.execute("CREATE TEMP TABLE jt (id int, v text)");
            }
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO jt VALUES (?, ?)")) {
                for (int i = 0; i < 50; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "v" + i);
                    ps.addBatch();
                }
                System.out.println("batch=" + ps.executeBatch().length);
            }
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("SELECT g FROM generate_series(1, 2000) g")) {
                ps.setFetchSize(100);
                long sum = 0;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) sum += rs.getLong(1);
                }
                System.out.println("sum=" + sum);
            }
            c.commit();
            try (Statement st = c.createStatement()) {
                st.execute("DELETE FROM jt");
                System.out.println("delete=allowed");
            } catch (SQLException e) {
                System.out.println("delete=" + e.getSQLState());
                c.rollback();
            }
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM jt")) {
                rs.next();
                System.out.println("after=" + rs.getInt(1));
            }
        }
    }
}
