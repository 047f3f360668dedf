// Masking through dbward with pgJDBC: prepared statements past prepareThreshold (named,
// binary transfer, Describe skipped on reuse), result metadata, a fetch-size cursor.
// Usage: java -cp postgresql.jar PgMaskProbe.java PORT USER PASSWORD DB
import java.sql.*;

public class PgMaskProbe {
    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + a[0] + "/" + a[3] + "?sslmode=disable&prepareThreshold=2";
        try (Connection c = DriverManager.getConnection(url, a[1], a[2])) {
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT c.id, c.phone, a.balance, a.born, c.name FROM customers c JOIN accounts a USING (id) WHERE c.id = ?")) {
                for (int i = 0; i < 6; i++) {
                    ps.setInt(1, 1 + (i % 2));
                    try (ResultSet rs = ps.executeQuery()) {
                        ResultSetMetaData md = rs.getMetaData();
                        if (i == 0) {
                            System.out.println("types=" + md.getColumnTypeName(2) + "," + md.getColumnTypeName(3) + "," + md.getColumnTypeName(4));
                        }
                        while (rs.next()) {
                            System.out.println("row=" + rs.getInt(1) + "|" + rs.getString(2) + "|" + rs.getString(3) + "|" + rs.getString(4) + "|" + rs.getString(5));
                        }
                    }
                }
            }
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.setFetchSize(100);
                int n = 0;
                boolean masked = true;
                try (ResultSet rs = st.executeQuery("SELECT g, phone FROM big ORDER BY g")) {
                    while (rs.next()) {
                        n++;
                        masked &= rs.getString(2).contains("****");
                    }
                }
                System.out.println("cursor=" + n + "," + masked);
            }
            c.commit();
        }
    }
}
